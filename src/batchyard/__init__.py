"""batchyard — run Alibaba Cloud BatchCompute job descriptions on your own machines."""

__version__ = "0.1.0"
