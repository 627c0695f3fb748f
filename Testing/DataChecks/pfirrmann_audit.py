"""Non-expert plausibility audit of the Pfirrmann estimate: one PNG per case with every disc's mid-sagittal crop.

Each panel shows the disc's own mid-sagittal plane (grey values as in the image), the disc outline (yellow), the
nucleus region (green) and annulus ends (blue) of :mod:`SpineAnalysisLib.measure.pfirrmann`, and the CSF
reference pixels behind the disc (red); the title gives the estimate, its criteria (nucleus / CSF, contrast,
inhomogeneity, DHI z, height ratio) and delta SI. A table of the same numbers is printed.

This is for looking at the images next to the numbers - a plausibility check by a non-expert against
Pfirrmann's published description. It is NOT expert grading and no threshold is tuned to it.

    python Testing/DataChecks/pfirrmann_audit.py IMAGE LABELS [IMAGE LABELS ...] --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib.measure import bianque, inputs, pfirrmann  # noqa: E402
from SpineAnalysisLib.measure import disc as disc_module  # noqa: E402
from SpineAnalysisLib.measure.sections import Spine  # noqa: E402


def disc_panel(spine: Spine, label: int):
    """(grey patch, overlay masks dict, text) of one disc, or None when it has no signal."""
    geo = disc_module.geometry(spine, label)
    signal, reason = disc_module.disc_signal(spine, label)
    rows = {p: (v, note) for p, v, _, note, *_ in disc_module.rows(spine, label)}
    section = geo.section
    if signal is None or section is None:
        return None, f"{spine.disc_name(label)}: {reason}"
    grey = spine.image_patch(label).values
    labels = section.patch.values
    nv, nu = labels.shape
    r, c = np.mgrid[0:nv, 0:nu]
    coords = section.patch.coords(r.ravel().astype(float), c.ravel().astype(float))
    e = disc_module.axis(geo)
    half = (0.5 * geo.heights[1] if geo.heights else 3.0) + bianque.CSF_BEYOND_DISC_MM
    csf_values, _ = bianque.csf_region(labels.ravel(), grey.ravel(), coords, geo.Dp, e, half)
    # recover the CSF pixels by value membership inside the search band (for display only)
    n = np.array([-e[1], e[0]])
    d = coords - geo.Dp
    band = (np.abs(d @ n) <= half) & (-(d @ e) >= bianque.CSF_SEARCH[0]) & (-(d @ e) <= bianque.CSF_SEARCH[1])
    csf_mask = np.zeros(nv * nu, bool)
    if csf_values is not None:
        lo_hi = np.isin(grey.ravel(), csf_values) & band
        csf_mask = lo_hi
    # nucleus / annulus masks
    points = section.points() - (geo.Da + geo.Dp) / 2
    along, across = points @ e, points @ n
    vals = np.arange(len(along), dtype=float)
    nuc_idx, ann_idx = pfirrmann.regions(vals, along, across)
    mask_rc = np.argwhere(section.mask)
    nucleus = np.zeros((nv, nu), bool)
    annulus = np.zeros((nv, nu), bool)
    nucleus[tuple(mask_rc[nuc_idx.astype(int)].T)] = True
    annulus[tuple(mask_rc[ann_idx.astype(int)].T)] = True
    overlays = {"disc": section.mask, "nucleus": nucleus, "annulus": annulus, "csf": csf_mask.reshape(nv, nu), "band": band.reshape(nv, nu)}
    f, _ = disc_module.signal_criteria(spine, label)
    grade = rows["pfirrmann_estimate"][0]
    dsi = rows["delta_si"][0]
    z = rows["dhi_z"][0]
    text = (f"{spine.disc_name(label)}: {'—' if grade is None else pfirrmann.ROMAN[int(grade)]}"
            + (f"  nuc {f.nucleus:.2f} con {f.contrast:+.2f} inh {f.inhomogeneity:.2f}" if f else "")
            + f"\nΔSI {dsi if dsi is None else round(dsi, 1)}  DHI z {z if z is None else round(z, 2)}  CSF {float(np.median(signal.csf)):.0f}")
    return (grey, overlays), text


def audit(image_path: Path, labels_path: Path, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = sitk.ReadImage(str(image_path))
    spine = Spine(inputs.load(image, sitk.ReadImage(str(labels_path))))
    discs = spine.discs()
    ncol = 3
    nrow = max(1, -(-len(discs) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[len(discs):]:
        ax.axis("off")
    lines = []
    for ax, label in zip(axes, discs):
        panel, text = disc_panel(spine, label)
        lines.append(f"{image_path.name.split('.')[0]} {text}".replace("\n", " | "))
        ax.set_title(text, fontsize=9)
        ax.axis("off")
        if panel is None:
            continue
        grey, o = panel
        top = np.percentile(grey[o["band"] | o["disc"]], 99.5) or 1.0
        ax.imshow(grey, cmap="gray", vmin=0, vmax=top, origin="upper")
        for name, colour in (("disc", "yellow"), ("nucleus", "lime"), ("annulus", "deepskyblue"), ("csf", "red")):
            if o[name].any():
                ax.contour(o[name].astype(float), levels=[0.5], colors=colour, linewidths=0.6)
    fig.suptitle(f"{image_path.name}: Pfirrmann ESTIMATE (non-expert plausibility audit)", fontsize=9)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / (image_path.name.split(".")[0] + ".png"), dpi=110)
    plt.close(fig)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pairs", nargs="+", type=Path, help="IMAGE LABELS pairs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give IMAGE LABELS pairs")
    for image, labels in zip(args.pairs[::2], args.pairs[1::2]):
        for line in audit(image, labels, args.out):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
