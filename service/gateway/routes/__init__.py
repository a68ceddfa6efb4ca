"""HTTP routes: parse the URL, call the data plane, answer. No protobufs here."""
