"""fakeedge: the Cloudflare edge with Cloudflare Access, on your laptop and in CI."""

__all__ = ["__version__"]

__version__ = "0.1.0"
