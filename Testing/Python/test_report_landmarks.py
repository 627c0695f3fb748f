"""report.png draws the body corners and the endplate lines where the landmarks project on the shown slice.

The phantom is written as the shared data's sagittal stack (axis 0 inferior, axis 1 posterior, axis 2 right), so a
point's place in the picture can be worked out by hand from the grid's origin, independently of the report's own
projection; the pixels of the saved PNG at those places must have the landmark colours, and do not without them.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colors
from matplotlib import image as mpimg

import phantoms as ph
from SpineAnalysisLib import report
from SpineAnalysisLib.measurements import measure_case_with_landmarks

PHANTOM = dict(levels=(22, 23, 24, 26), heights=26.0, discs=[(12, 8), (13, 8), (15, 7)], top_angle=8.0, csf=False)


@pytest.fixture(scope="module")
def case():
    phantom = ph.build_spine(**PHANTOM)
    label_map, image = ph.render_phantom(phantom, (1.0, 1.0, 1.0), ph.SAGITTAL_STACK)
    rows, landmarks = measure_case_with_landmarks(image, label_map)
    return image, label_map, rows, landmarks


def by_hand(image, point_lps) -> np.ndarray:
    """Picture position (x: anterior -> posterior, y: superior -> inferior, mm from the picture's corner) on this
    grid: rows are axis 0 (inferior), columns axis 1 (posterior), 1 mm voxels; pixel centres at +0.5."""
    origin = np.asarray(image.GetOrigin())
    x, y, z = point_lps
    return np.array([(y - origin[1]) + 0.5, (origin[2] - z) + 0.5])


def test_the_projection_is_the_grid_position(case):
    image, _, _, landmarks = case
    frame = report.sagittal_frame(image)
    corners, lines = report.landmark_marks(landmarks)
    assert len(corners) == 16 and "L3 AS" in corners
    assert set(lines) == {"L3 inferior endplate", "L4 superior endplate", "L4 inferior endplate", "L5 superior endplate",
                          "L5 inferior endplate", "S1 superior endplate"}
    points = list(corners.values())
    assert np.allclose(report.picture_coordinates(image, frame, points), [by_hand(image, p) for p in points], atol=1e-6)


def _pixels(figure_axis, png, xy):
    """PNG pixels (rgb 0-1) at picture positions ``xy`` (the axis' data coordinates), and their row/column."""
    figure, axis = figure_axis
    display = axis.transData.transform(np.atleast_2d(xy))
    height = png.shape[0]
    rows = np.rint(height - display[:, 1]).astype(int)
    cols = np.rint(display[:, 0]).astype(int)
    return png[rows, cols, :3], rows, cols


def _near(pixels, colour, tolerance=0.12) -> np.ndarray:
    return np.all(np.abs(pixels - np.asarray(colors.to_rgb(colour))) <= tolerance, axis=-1)


def test_report_png_draws_the_corners_and_endplate_lines_where_they_project(case, tmp_path):
    import matplotlib.pyplot as plt

    image, label_map, rows, landmarks = case
    with_marks = mpimg.imread(report.write_report(image, label_map, rows, tmp_path / "report.png", landmarks=landmarks))
    without = mpimg.imread(report.write_report(image, label_map, rows, tmp_path / "plain.png"))
    layout = report.draw_report(image, label_map, rows, landmarks=landmarks)  # the same figure, for its transform
    layout[0].canvas.draw()  # the axis' aspect (and so its transform) is applied when drawn
    corners, lines = report.landmark_marks(landmarks)
    xy = np.array([by_hand(image, p) for p in corners.values()])
    drawn, _, _ = _pixels(layout, with_marks, xy)
    plain, _, _ = _pixels(layout, without, xy)
    assert _near(drawn, report.CORNER_COLOUR).all(), drawn
    assert not _near(plain, report.CORNER_COLOUR).any()
    for name, (start, end) in lines.items():
        middle = (by_hand(image, start) + by_hand(image, end)) / 2
        pixels, row, col = _pixels(layout, with_marks, middle)
        # a thin line (0.8 pt, about 1 pixel, antialiased, 90 % opaque): its colour within a pixel of the projected mid-point
        window = with_marks[row[0] - 1:row[0] + 2, col[0] - 1:col[0] + 2, :3]
        assert _near(window, report.LINE_COLOUR, 0.3).any(), (name, window)
        assert not _near(without[row[0] - 1:row[0] + 2, col[0] - 1:col[0] + 2, :3], report.LINE_COLOUR, 0.3).any()
    plt.close(layout[0])
    # thin and unobtrusive: the marks change under 1 % of the picture
    changed = np.any(np.abs(with_marks[..., :3] - without[..., :3]) > 0.05, axis=-1)
    assert 0 < changed.mean() < 0.01
