"""Print pip requirements that pin the torch family already installed in this interpreter.

Use: pip install . $(python scripts/keep_torch.py)
Installing ilif into an environment that has torch but not torchvision (or torchaudio, which
spikingjelly requires) would otherwise let pip take the newest of those, whose own torch pin replaces
yours. Naming the installed versions makes pip choose the releases built for your torch instead.
Reads package metadata only; torch is not imported.
"""

from importlib import metadata

FAMILY = ("torch", "torchvision", "torchaudio")


def pins() -> list[str]:
    """The installed members of FAMILY as `name==version` (a local tag such as +cpu dropped)."""
    found = []
    for name in FAMILY:
        try:
            found.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return found


if __name__ == "__main__":
    print(" ".join(pins()))
