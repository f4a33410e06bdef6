"""bioimage.io models as ModelRunner endpoints: the runner adapter and its pieces."""
