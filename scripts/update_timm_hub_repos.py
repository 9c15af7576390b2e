"""Write ``examine/timm_hub_repos.json``: the hub repository of every pretrained timm ViT/DeiT name.

``examine.hub`` reads it to check a named model before torch and timm are imported. Run it after upgrading timm
(``tests/test_hub.py`` says when the shipped file and the installed timm disagree)::

    .venv/bin/python scripts/update_timm_hub_repos.py
"""

from __future__ import annotations

import json

from examine.hub import REPOS_FILE

#: The families examine builds (examine.encoder accepts vit_* and deit_* timm names).
FAMILIES = ("vit_", "deit_")


def timm_hub_repos() -> dict[str, str | None]:
    """Every tagged pretrained ViT/DeiT name of the installed timm, with the hub repository of its weights (None
    when timm fetches them from a URL instead)."""
    import timm
    from timm.models import get_pretrained_cfg

    repos: dict[str, str | None] = {}
    for name in timm.list_pretrained():
        if name.split(".")[0].startswith(FAMILIES):
            repos[name] = getattr(get_pretrained_cfg(name), "hf_hub_id", None) or None
    return dict(sorted(repos.items()))


def main() -> None:
    import timm

    repos = timm_hub_repos()
    REPOS_FILE.write_text(json.dumps({"timm": timm.__version__, "repos": repos}, indent=0) + "\n")
    print(f"wrote {len(repos)} names from timm {timm.__version__} to {REPOS_FILE}")


if __name__ == "__main__":
    main()
