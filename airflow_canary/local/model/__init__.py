"""The demo's model server and the training of its models."""
