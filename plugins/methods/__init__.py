"""Built-in quantization-method plugins: one module per method, each registering one Quantizer."""
