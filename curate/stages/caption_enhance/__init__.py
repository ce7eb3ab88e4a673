"""Caption enhancement: each clip's caption rewritten by a language model into a longer, prompt-style
description (the caption training and generation see), the original kept beside it (optional stage)."""
