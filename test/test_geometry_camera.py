"""Array geometry, camera projection and the params file."""
import numpy as np
import pytest
import yaml

from av_localization_ros.core import params as P
from av_localization_ros.core.camera import (R_BODY_OPTICAL, CalibrationError, CameraGeometry,
                                             matrix_to_quaternion, quaternion_to_matrix)
from av_localization_ros.core.geometry import GeometryError, MicArray
from av_localization_ros.core.types import angular_distance, direction_vector, vector_to_azel


@pytest.mark.parametrize("name,n,radius", [("respeaker_usb_4mic_v2", 4, 0.032),
                                           ("respeaker_6mic_circular", 6, 0.0463),
                                           ("minidsp_uma8", 7, 0.043),
                                           ("matrix_voice", 8, 0.0383)])
def test_presets(name, n, radius):
    arr = MicArray.from_preset(name)
    assert arr.n_mics == n
    r = np.linalg.norm(arr.positions[:, :2], axis=1)
    assert np.isclose(r.max(), radius)
    assert arr.is_planar
    assert np.allclose(arr.positions.mean(axis=0)[:2], 0.0, atol=1e-3)


# Channel positions of the ODAS configurations (introlab/odas config/odaslive/minidsp.cfg and
# matrix_voice.cfg), written out here independently of the presets' circular_array form.
ODAS_LAYOUTS = {
    "minidsp_uma8": [(0, 0), (0, .043), (.037, .021), (.037, -.021), (0, -.043), (-.037, -.021),
                     (-.037, .021)],
    "matrix_voice": [(0, 0), (-.038133, .003576), (-.020980, .032043), (.011971, .036381),
                     (.035908, .013323), (.032805, -.019767), (.004999, -.037972),
                     (-.026571, -.027584)],
}


@pytest.mark.parametrize("name", sorted(ODAS_LAYOUTS))
def test_presets_follow_the_drivers_channel_order(name):
    """Mirror-image or wrong-board layouts put a source at 30 deg at 60 or -165 deg."""
    got = MicArray.from_preset(name).positions[:, :2]
    assert np.abs(got - np.array(ODAS_LAYOUTS[name])).max() < 1.5e-3  # odas rounds to 1 mm


def test_custom_geometry_and_validation():
    arr = MicArray.from_params({"mic_positions": [0.05, 0, 0, -0.05, 0, 0, 0, 0.05, 0.02]})
    assert arr.n_mics == 3 and not arr.is_planar
    assert np.isclose(arr.aperture_m, 0.1)
    with pytest.raises(GeometryError, match="at least 2"):
        MicArray.from_flat([0, 0, 0])
    with pytest.raises(GeometryError, match="same position"):
        MicArray.from_flat([0, 0, 0, 0, 0, 0])
    with pytest.raises(GeometryError, match="triples"):
        MicArray.from_flat([0, 0, 0, 1])
    with pytest.raises(GeometryError, match="unknown"):
        MicArray.from_preset("nope")
    # [0.0] is the unset default -> preset
    assert MicArray.from_params({"mic_positions": [0.0],
                                 "mic_array_preset": "matrix_voice"}).n_mics == 8


def test_direction_convention_rep103():
    # azimuth 90 deg = +y = left; elevation 90 deg = +z = up
    assert np.allclose(direction_vector(np.pi / 2, 0), [0, 1, 0], atol=1e-12)
    assert np.allclose(direction_vector(0, np.pi / 2), [0, 0, 1], atol=1e-12)
    az, el = vector_to_azel(np.array([-1.0, -1.0, 0.0]))
    assert np.isclose(np.rad2deg(az), -135.0) and np.isclose(el, 0.0)
    assert np.isclose(np.rad2deg(angular_distance(np.deg2rad(179), 0, np.deg2rad(-179), 0)), 2.0)


def test_camera_projection_round_trip():
    cam = CameraGeometry.from_fov(640, 480, 70.0, t_array_optical=np.array([0.0, 0.0, 0.06]))
    # a point straight ahead at camera height projects to the principal point
    uv, z = cam.project_points(np.array([2.0, 0.0, 0.06]))
    assert np.allclose(uv, [319.5, 239.5]) and np.isclose(z, 2.0)
    # a point to the left (+y) projects left of centre (smaller u); above (+z) -> smaller v
    uv, _ = cam.project_points(np.array([2.0, 0.5, 0.5]))
    assert uv[0] < 319.5 and uv[1] < 239.5
    # back-projection hits the same point
    p = np.array([2.5, -0.4, 0.3])
    uv, depth = cam.project_points(p)
    ray = cam.pixel_rays_array(uv[0], uv[1])
    q = cam.t_array_optical + ray * np.linalg.norm(p - cam.t_array_optical)
    assert np.allclose(q, p, atol=1e-9)
    # behind the camera -> negative depth
    assert cam.project_points(np.array([-1.0, 0, 0]))[1] < 0


def test_quaternion_round_trip_and_bad_calibration():
    q = matrix_to_quaternion(R_BODY_OPTICAL)
    assert np.allclose(quaternion_to_matrix(*q), R_BODY_OPTICAL)
    with pytest.raises(CalibrationError):
        CameraGeometry(k=np.zeros((3, 3)), width=640, height=480)
    with pytest.raises(CalibrationError):
        quaternion_to_matrix(0, 0, 0, 0)


def test_params_file_round_trip_and_rejects_unknown(tmp_path):
    path = tmp_path / "p.yaml"
    P.write_params({**P.defaults(), "doa.max_sources": 2}, path)
    doc = yaml.safe_load(path.read_text())
    assert doc["/**"]["ros__parameters"]["doa"]["max_sources"] == 2
    assert P.load_params(path)["doa.max_sources"] == 2
    path.write_text("/**:\n  ros__parameters:\n    doa:\n      nope: 1\n")
    with pytest.raises(ValueError, match="unknown parameters"):
        P.load_params(path)


def test_params_file_shapes_and_node_parameters(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('/**:\n  ros__parameters:\n    mic_positions: "123456"\n')
    with pytest.raises(ValueError, match="mic_positions"):  # was read as [1, 2, 3, 4, 5, 6]
        P.load_params(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="maps node names"):
        P.load_params(path)
    # the live node's own parameters may share the file; the algorithm ignores them
    path.write_text("/**:\n  ros__parameters:\n    publish_overlay: false\n"
                    "    doa:\n      max_sources: 2\n")
    p = P.load_params(path)
    assert p["doa.max_sources"] == 2 and "publish_overlay" not in p


def test_shipped_params_file_is_complete():
    from conftest import REPO  # noqa: E402
    assert set(P.load_params(REPO / "config" / "params.yaml")) == set(P.PARAMETERS)


def test_elevation_grid_stays_off_the_poles():
    """A grid row at +-90 deg is one direction repeated: no cell of it is a local maximum."""
    for name in ("doa.max_elevation_deg", "doa.min_elevation_deg", "doa.azimuth_only_elevation_deg"):
        with pytest.raises(ValueError, match=name):
            P.coerce_params({**P.defaults(), name: 90.0 if "max" in name or "only" in name else -90.0})
