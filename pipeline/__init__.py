"""nnserve's training side: a Prefect flow from a YAML spec to a published SavedModel version."""
