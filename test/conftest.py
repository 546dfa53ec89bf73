import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_speech_dir():
    d = SHARED_DATA / "speech"
    if not d.is_dir():
        pytest.skip("../shared/data/speech is absent (real speech recordings live outside the repo)")
    return d


@pytest.fixture(scope="session")
def shared_ula_dir():
    d = SHARED_DATA / "mic_array" / "ula8_spatialaudio"
    if not d.is_dir():
        pytest.skip("../shared/data/mic_array/ula8_spatialaudio is absent (real array "
                    "recordings live outside the repo)")
    return d
