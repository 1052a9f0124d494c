"""Built-in backend plugins: one module per runtime or kernel family, each declaring its capabilities."""
