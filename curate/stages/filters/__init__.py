"""Filters: score every candidate clip (motion, jitter, sharpness, brightness) and apply the keep rules
(`rules.FILTERS`, in order; the first rule a clip breaks names its reject reason)."""
