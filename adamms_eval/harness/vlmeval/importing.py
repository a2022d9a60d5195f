"""Import VLMEvalKit once, quietly, or fail with one line that names the extra to install.

`import vlmeval` takes ~7-11 s (it imports torch, transformers and every dataset class) and logs an ERROR
when no `.env` file of API keys sits beside the package; that one record says nothing about the user's
run, so it is dropped. VLMEvalKit also turns off TLS certificate checks process-wide at import
(`ssl._create_default_https_context`) for its own downloads; we leave that as it is, because undoing it
would change how VLMEvalKit downloads datasets. `vlmeval.vlm` also calls `torch.set_grad_enabled(False)` at
import, which silently breaks any training later in the same process; the caller's grad mode is restored
(VLMEvalKit's wrappers generate under `generate()`'s own no_grad).
"""
from __future__ import annotations

import logging

import torch

from ...errors import AdammsError


class _DropMissingEnvFile(logging.Filter):
    def filter(self, record):
        return "Did not detect the .env file" not in record.getMessage()


def vlmeval_modules():
    """Import vlmeval, vlmeval.config, vlmeval.vlm and vlmeval.dataset; return the vlmeval package."""
    root = logging.getLogger()
    quiet = _DropMissingEnvFile()
    root.addFilter(quiet)
    grad = torch.is_grad_enabled()
    try:
        import vlmeval
        import vlmeval.config  # noqa: F401
        import vlmeval.dataset  # noqa: F401
        import vlmeval.vlm  # noqa: F401
    except ImportError as e:
        raise AdammsError(f"VLMEvalKit is not installed ({e}); pip install 'adamms-eval[vlmeval]' "
                          "(ms-vlmeval>=0.0.20)") from None
    finally:
        root.removeFilter(quiet)
        torch.set_grad_enabled(grad)
    return vlmeval
