"""The six baselines of the paper's Table 1 (Offline DV2, LOMPO, DrQ+BC, DrQ+CQL, BC, InfoGating), one module each."""
