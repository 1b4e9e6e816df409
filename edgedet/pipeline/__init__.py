"""The inference stages between the capture threads and the publisher: infer, then decode + publish."""
