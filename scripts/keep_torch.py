"""Print pip requirements that pin the torch family already installed in this interpreter.

Use: pip install . $(python scripts/keep_torch.py)
Installing ilif into an environment that has torch but not torchvision (or torchaudio, which
spikingjelly requires) would otherwise let pip take the newest of those, whose own torch pin replaces
yours. Naming the installed versions makes pip choose the releases built for your torch instead.
Reads package metadata only; torch is not imported.
"""

import sys
from importlib import metadata

FAMILY = ("torch", "torchvision", "torchaudio")


def pins() -> list[str]:
    """The installed members of FAMILY as `name==version` (a local tag such as +cpu dropped). Raises
    ValueError naming a package whose metadata has no version (a broken install)."""
    found = []
    for name in FAMILY:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if not isinstance(version, str) or not version.split("+")[0].strip():
            raise ValueError(f"{name} is installed without a version in its metadata ({version!r}): reinstall it, "
                             "or pin it by hand")
        found.append(f"{name}=={version.split('+')[0]}")
    return found


if __name__ == "__main__":
    try:
        print(" ".join(pins()))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
