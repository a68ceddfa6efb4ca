"""nnserve's serving side: the model server, the HTTP gateway and the `nnserve` command."""
