"""The Hugging Face hub: fail fast, in one line, when it cannot be reached.

``datasets`` and ``huggingface_hub`` retry an unreachable hub for half a minute (five retries with
back-off, not configurable) and then raise a long traceback. Before a download, ``require_repo``
asks the hub once for the repository's metadata (one request, ``PROBE_TIMEOUT`` seconds, no retry)
and turns every failure into a ``HubError``: one line that names the config key, the repository,
what went wrong and what to do instead (the remedies of the calling key). With ``HF_HUB_OFFLINE=1``
nothing is asked; the libraries read their caches, and a miss there is reported the same way.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Callable

from .errors import GlueRLError

PROBE_TIMEOUT = 5.0  # seconds for the one metadata request (connect and read)


class HubError(GlueRLError):
    """The hub cannot give a configured dataset or model (unreachable, missing, gated, not cached)."""


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: the hub libraries use their caches only."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def one_line(text: str, limit: int = 200) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _what(repo_id: str, repo_type: str, revision: str | None) -> str:
    return f"{repo_type} {repo_id}" + (f" (revision {revision})" if revision else "")


def require_repo(repo_id: str, repo_type: str, revision: str | None, key: str, remedies: str,
                 cached: Callable[[], bool] | None = None) -> str | None:
    """Raise ``HubError`` (naming ``key``, the repo and ``remedies``) unless the hub answers for it.

    Returns the commit the hub resolves ``revision`` to (``None`` when not probed or not given).

    ``repo_type`` is ``dataset`` or ``model``. A local folder given as ``repo_id`` and offline mode
    are not probed. ``cached()`` says whether the cache holds a copy (the error then says so first).
    """
    if offline() or os.path.isdir(repo_id):
        return None
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    what = _what(repo_id, repo_type, revision)
    info = HfApi().dataset_info if repo_type == "dataset" else HfApi().model_info
    try:
        found = info(repo_id, revision=revision, timeout=PROBE_TIMEOUT)
    except GatedRepoError:
        raise HubError(f"{key}: {what} is gated on the Hugging Face hub: accept its terms on the hub and "
                       f"give a token (HF_TOKEN or `hf auth login`); or {remedies}") from None
    except RevisionNotFoundError:
        raise HubError(f"{key}: {what}: the hub has no such revision; or {remedies}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{key}: {what} does not exist on the Hugging Face hub ({endpoint()}) or needs a "
                       f"token (HF_TOKEN); or {remedies}") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise HubError(f"{key}: the Hugging Face hub at {endpoint()} answered HTTP {status} for {what}; "
                       f"{remedies}") from None
    except Exception as e:  # connection refused, DNS, timeout, proxy, TLS: the hub is not reachable
        if cached is not None and cached():
            remedies = "the Hugging Face cache has a copy: set HF_HUB_OFFLINE=1 to use it; or " + remedies
        raise HubError(f"{key}: cannot reach the Hugging Face hub at {endpoint()} for {what} "
                       f"({type(e).__name__}: {one_line(e)}); {remedies}") from None
    sha = getattr(found, "sha", None)
    return sha if isinstance(sha, str) else None


def not_cached(repo_id: str, repo_type: str, revision: str | None, key: str, remedies: str) -> HubError:
    """The error for a repository the cache lacks while ``HF_HUB_OFFLINE`` is set."""
    if repo_type == "dataset":
        from datasets import config

        cache, fill = config.HF_DATASETS_CACHE, "run this step once where the hub is reachable, with the same HF_HOME"
    else:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
        fill = f"`hf download {repo_id}` where the hub is reachable, with the same HF_HOME"
    return HubError(f"{key}: HF_HUB_OFFLINE is set and the Hugging Face cache ({cache}) has no "
                    f"{_what(repo_id, repo_type, revision)}: fill it ({fill}); or {remedies}")


def model_cached(repo_id: str, revision: str | None) -> bool:
    """The cache holds the model's config.json at ``revision`` (default branch when None)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def dataset_cached(repo_id: str, config_name: str | None) -> bool:
    """``datasets`` has prepared ``repo_id`` (that config) before: what it reads with HF_HUB_OFFLINE=1."""
    from datasets import config

    namespace, _, name = repo_id.rpartition("/")
    folder = f"{namespace}___{name}" if namespace else name
    return bool(glob.glob(os.path.join(config.HF_DATASETS_CACHE, folder, config_name or "*", "*", "*")))
