"""Behaviour policies trained online for LQV-D4RL: the TIA agent (``collectors.tia``)."""

from collectors.tia import ADVERSARIAL_SCALES, TIAAgent, TIAConfig, TIAInputError, benchmark_update

__all__ = ["ADVERSARIAL_SCALES", "TIAAgent", "TIAConfig", "TIAInputError", "benchmark_update"]
