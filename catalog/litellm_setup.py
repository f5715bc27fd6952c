"""litellm, imported once and set up for a gateway: the price map bundled with the
pinned release (never fetched from the network), no telemetry, no tokenizer
downloads, no debug banners, provider-unsupported parameters dropped.

Everything in the project that needs litellm (the price map here in the catalogue,
the provider calls and token counting in the gateway) takes it from this module,
so the settings are in force whichever of them is imported first."""
from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

litellm.telemetry = False
litellm.disable_hf_tokenizer_download = True
litellm.suppress_debug_info = True
litellm.drop_params = True

__all__ = ["litellm"]
