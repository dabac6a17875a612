"""What the triton tiers share: kernel math, gate helpers, dtype names, the precision policy,
variable-length bookkeeping, weight-gradient matmuls and the op registration.

Tier packages import from here and never from one another.
"""
