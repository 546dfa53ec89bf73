"""The parameter table: descriptions, types, ranges and choices, checked where params files
are read (replay, DDS node) and where the rclpy node starts."""
import math

import pytest

from av_localization_ros.core.params import PARAMETERS, coerce_params, defaults, load_params, write_params
from av_localization_ros.nodes.localizer_logic import validate_params


def test_every_parameter_has_a_description_and_its_default_is_valid():
    for name, spec in PARAMETERS.items():
        assert spec.description.strip(), name
    assert coerce_params(defaults()) == defaults()
    validate_params(defaults())


def test_types_are_coerced_to_the_defaults_types():
    p = coerce_params(dict(defaults(), **{"speed_of_sound": 340, "doa.max_sources": 2.0}))
    assert p["speed_of_sound"] == 340.0 and isinstance(p["speed_of_sound"], float)
    assert p["doa.max_sources"] == 2 and isinstance(p["doa.max_sources"], int)
    for bad in ({"doa.max_sources": "three"}, {"doa.azimuth_only": "yes"},
                {"doa.max_sources": 2.5}, {"vad.threshold": None}, {"audio.window_s": [0.2]},
                {"array_frame": 3}):
        with pytest.raises(ValueError, match="is not of type"):
            coerce_params(dict(defaults(), **bad))


@pytest.mark.parametrize("name,value,message", [
    ("doa.rate_hz", 1e9, "outside"),  # a tick loop that never ends
    ("audio.buffer_s", 1e9, "outside"),  # a ring buffer of 233 TiB
    ("audio.buffer_s", 0.0, "outside"),
    ("tracker.birth_hits", 0, "outside"),
    ("speed_of_sound", math.nan, "not finite"),
    ("tracker.silence_keep_s", math.inf, "not finite"),
    ("doa.method", "musik", "not one of"),
    ("heatmap.backend", "cuda", "not one of"),
])
def test_out_of_range_values_are_refused_with_what_they_mean(name, value, message):
    with pytest.raises(ValueError, match=message) as exc:
        coerce_params(dict(defaults(), **{name: value}))
    assert name in str(exc.value) and PARAMETERS[name].description in str(exc.value)


def test_a_params_file_reports_every_problem_at_once(tmp_path):
    path = tmp_path / "params.yaml"
    write_params(dict(defaults(), **{"doa.rate_hz": 0.0, "vad.threshold": 2.0}), path)
    with pytest.raises(ValueError) as exc:
        load_params(path)
    assert "doa.rate_hz" in str(exc.value) and "vad.threshold" in str(exc.value)
    write_params(dict(defaults(), **{"doa.rate_hz": 20}), path)  # YAML int for a float
    assert load_params(path)["doa.rate_hz"] == 20.0
