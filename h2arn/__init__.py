"""h2arn: reference implementation and course package for H2ARN (hyperbolic text-3D retrieval)."""
__version__ = "0.1.0"
