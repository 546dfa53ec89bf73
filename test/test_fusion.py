"""DoA likelihood projected into the image lands where the camera sees the source."""
import numpy as np

from av_localization_ros.core.camera import CameraGeometry
from av_localization_ros.core.fusion import DoaImageProjector, fuse


def test_projected_doa_peak_falls_on_the_source_pixel():
    cam = CameraGeometry.from_fov(640, 480, 70.0, t_array_optical=np.array([0.05, 0.0, 0.06]))
    azimuths = np.deg2rad(np.arange(-180, 180, 2.0))
    elevations = np.array([0.0])
    source = np.array([2.0, 0.6, 0.06])  # 2 m ahead, 0.6 m left, at camera height
    az = np.arctan2(source[1], source[0])
    doa_map = np.exp(-0.5 * ((azimuths - az) / np.deg2rad(4.0)) ** 2)[None, :]
    proj = DoaImageProjector(cam, azimuths, elevations, range_m=float(np.linalg.norm(source[:2])))
    like = proj.likelihood(doa_map)
    h, w = proj.shape
    col = np.argmax(like.max(axis=0))
    (u, _), _ = cam.project_points(source)
    assert abs((col + 0.5) * 640 / w - 0.5 - u) < 640 / w * 2  # within two working pixels
    # an azimuth-only map is constant along image columns (no elevation information)
    assert np.allclose(like[0], like[-1])


def test_fuse_multiplies_and_normalises():
    heat = np.zeros((4, 4), np.float32)
    heat[1, 1] = heat[2, 3] = 1.0
    like = np.zeros((4, 4), np.float32)
    like[:, 3] = 1.0  # the DoA says: right-hand column
    out = fuse(heat, like)
    assert out[2, 3] == 1.0 and out[1, 1] == 0.0
    assert np.array_equal(fuse(heat, np.zeros_like(like)), heat)  # silent DoA passes through
