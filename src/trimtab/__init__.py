"""trimtab: real-time micro-adjustments of web content, with every adjustment measured."""

__version__ = "0.1.0"
