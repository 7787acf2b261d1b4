"""Thespian actors: one module per OTP process of the seed's supervision tree (SPEC 9)."""
