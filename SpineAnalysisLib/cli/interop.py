"""The annotators' loop and DICOM interoperability commands.

    spineanalysis export-training IMAGE LABELS -o DATASET [--original LABELS] [--case-id ID] [--model NAME]
                                 [--annotated-levels present|LEVELS|dataset]
    spineanalysis finetune DATASET [-o MODELDIR] [--steps N] [--base MODEL] [--mix-shipped]
    spineanalysis dicom-seg DICOM_FOLDER LABELS -o SEG.dcm [--model NAME] [--edited L4,L4-L5]
    spineanalysis dicom-seg --read SEG.dcm REFERENCE -o LABELS.nii.gz
    spineanalysis export-measurements IMAGE LABELS -o MEASUREMENTS.csv   (with DICOM study/series UIDs)

IMAGE and REFERENCE may be image files or DICOM series folders. An existing output file is replaced only with
``--overwrite`` (dicom-seg, export-measurements).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..outputs import LABEL_MAP_SUFFIXES, check_output_file
from .options import add_overwrite_option, add_subject_options

COMMANDS = ("export-training", "finetune", "dicom-seg", "export-measurements")


def add_commands(commands) -> None:
    export = commands.add_parser("export-training", help="add a corrected case to a training dataset folder (nnU-Net/MONAI layout)")
    export.add_argument("image", help="image file or DICOM series folder")
    export.add_argument("labels", help="the corrected label map (on the image grid), a .seg.nrrd or a DICOM SEG (.dcm)")
    export.add_argument("-o", "--output", required=True, help="dataset folder (created when missing)")
    export.add_argument("--original", help="the model's label map before correction, or its DICOM SEG (kept in labelsOriginal/)")
    export.add_argument("--case-id", help="case identifier (default: from the image file name)")
    export.add_argument("--model", help="model that produced the original, 'name version' or name@version")
    export.add_argument("--annotator", help="who corrected the case (stored in the provenance)")
    export.add_argument("--overwrite", action="store_true", help="replace a case of the same id that holds another image")
    export.add_argument(
        "--annotated-levels", metavar="present|LEVELS|dataset",
        help="a partial map (e.g. someone else's expert map of some levels): 'present' = it annotates only the structures it "
             "holds, or a comma list of structures it also annotates as absent (L5-S1,T12-L1); fine-tuning leaves every other "
             "structure unknown. 'dataset' = the default (the map and every structure the dataset declares; one left out is "
             "absent). Without it a re-export keeps the case's earlier statement",
    )  # fmt: skip

    tune = commands.add_parser("finetune", help="fine-tune a model on an exported dataset folder; writes a new model version")
    tune.add_argument("dataset", help="dataset folder written by export-training")
    tune.add_argument("-o", "--output", help="new model folder (default: the user model folder, ~/.spineanalysis/models or $SPINEANALYSIS_MODELS)")
    tune.add_argument("--base", help="model to start from: name, name@version or folder (default: the shipped model)")
    tune.add_argument("--steps", type=int, default=300)
    tune.add_argument("--mix-shipped", action="store_true", help="also train on the shipped training data (../shared/data/lumbar_mri)")
    tune.add_argument("--data", help="shipped training data folder with manifest.csv (with --mix-shipped)")
    tune.add_argument("--name", help="name of the new model (default: BASE-finetuned)")
    tune.add_argument("--version", help="version of the new model (default: next free number)")
    tune.add_argument("--batch-size", type=int, default=8)
    tune.add_argument("--crop", type=int, help="training window in pixels (default 224)")
    tune.add_argument("--learning-rate", type=float, default=2e-4, help="peak learning rate (the shipped model was trained with 2e-3)")
    tune.add_argument("--threads", type=int, default=2)
    tune.add_argument("--keep-run", action="store_true", help="keep the run folder (checkpoints, log) after success")
    tune.add_argument("--train-batch-norm", action="store_true", help="update batch-norm statistics too (default: keep the base model's)")
    tune.add_argument("--summary", help="write the before/after summary as JSON here")
    tune.add_argument("--overwrite", action="store_true", help="replace an existing --summary file")

    seg = commands.add_parser("dicom-seg", help="write a label map as DICOM SEG referencing its source series, or --read one back")
    seg.add_argument("first", metavar="DICOM_FOLDER|SEG", help="source DICOM series folder (write) or the SEG file (--read)")
    seg.add_argument("second", metavar="LABELS|REFERENCE", help="label map on the series' grid (write) or the reference image/DICOM folder (--read)")
    seg.add_argument("-o", "--output", required=True, help="SEG file to write, or label map to write with --read")
    seg.add_argument("--read", action="store_true", help="read a SEG onto the grid of REFERENCE")
    seg.add_argument("--model", help="model that produced the segmentation (algorithm identification)")
    seg.add_argument("--edited", help="comma-separated structures an annotator edited (SEMIAUTOMATIC), or 'all'")
    seg.add_argument("--fill-missing-uids", action="store_true", help="derive stand-in Study/Series UIDs for an anonymised series that lacks them")
    seg.add_argument("--skip-unknown", action="store_true", help="with --read: ignore segments outside the SpineAnalysis label scheme")
    add_overwrite_option(seg)

    table = commands.add_parser("export-measurements", help="measurements as a structured CSV with DICOM study/series identifiers")
    table.add_argument("image", help="image file or DICOM series folder")
    table.add_argument("labels", help="label map, or a DICOM SEG (.dcm) of the image")
    table.add_argument("-o", "--output", required=True, help="CSV file to write")
    table.add_argument("--no-patient-id", action="store_true", help="leave the PatientID column out")
    add_subject_options(table)
    add_overwrite_option(table)


def _installed_model(text: str | None):
    """The installed model that ``--model`` names with its version (or folder), so that the provenance records its
    sha256: fine-tuned models are numbered 1, 2 ... per model folder, so a name and version alone do not say which
    weights produced a case. A bare name or a model not installed here stays the text given."""
    if not text:
        return None
    from ..annotation import split_model_text
    from ..errors import ModelError
    from ..model import store

    name, version = split_model_text(text)
    if version is None and not Path(text).is_dir():
        return text
    try:
        return store.find_model(text if Path(text).is_dir() else f"{name}@{version}")
    except ModelError:
        return text


def _read_labels(path: str, reference):
    from .. import imageio

    if str(path).lower().endswith(".dcm"):
        from ..dicomseg import read_dicom_seg

        label_map, _names = read_dicom_seg(path, reference)
        return label_map
    return imageio.read_label_map(path, reference=reference)


def run(args: argparse.Namespace) -> int:
    from .. import imageio

    if args.command == "export-training":
        from ..annotation import export_training_case

        image = imageio.read_scan(args.image)
        corrected = _read_labels(args.labels, image)
        original = None
        if args.original:  # a DICOM SEG is read like the corrected labels; a model output may be empty, so no check here
            original = _read_labels(args.original, image) if str(args.original).lower().endswith(".dcm") else imageio.read_image(args.original)
        result = export_training_case(
            image, corrected, args.output, args.case_id, original_label_map=original, model=_installed_model(args.model), annotator=args.annotator, image_path=args.image,
            overwrite=args.overwrite, annotated_levels=args.annotated_levels,
        )
        action = "updated" if result.replaced else "added"
        edited = ", ".join(result.provenance["edited_structures"]) or ("none" if result.provenance["original_available"] else "unknown (no original)")
        print(f"{action} case {result.case_id} in {result.dataset_dir} (edited: {edited})")
        annotates = result.provenance["annotated_labels"]
        if annotates is not None:
            print(f"partial map: annotates {', '.join(annotates.values())} only; fine-tuning leaves every other structure unknown")
        return 0
    if args.command == "finetune":
        if args.summary:  # checked before the run, not after it
            check_output_file(args.summary, (".json",), args.overwrite, option="--summary", what="summary")
        from ..finetune import finetune

        result = finetune(
            args.dataset, args.output, base_model=args.base, steps=args.steps, mix_shipped_data=args.mix_shipped, shipped_data_dir=args.data,
            name=args.name, version=args.version, batch_size=args.batch_size, crop=args.crop, learning_rate=args.learning_rate,
            threads=args.threads, keep_run=args.keep_run, freeze_batch_norm=not args.train_batch_norm,
        )  # fmt: skip
        summary = result.summary()
        print(f"model {summary['model']} in {summary['folder']} (sha256 {summary['sha256']})")
        print(f"loss {summary['loss_first']:.4f} -> {summary['loss_last']:.4f} in {summary['seconds']:.0f} s on {summary['device']}")
        print(f"validation before: {json.dumps(summary['validation_before'])}")
        print(f"validation after:  {json.dumps(summary['validation_after'])}")
        for note in summary["notes"]:
            print(f"note: {note}")
        if args.summary:
            imageio.write_text(json.dumps(summary, indent=1) + "\n", args.summary)
        return 0
    if args.command == "dicom-seg":
        from ..dicomseg import read_dicom_seg, write_dicom_seg

        check_output_file(args.output, LABEL_MAP_SUFFIXES if args.read else None, args.overwrite, what="label map" if args.read else "DICOM SEG",
                          inputs=(args.first, args.second))
        if args.read:
            label_map, names = read_dicom_seg(args.first, args.second, unknown="skip" if args.skip_unknown else "error")
            imageio.write_image(label_map, args.output)
            print(f"wrote {args.output}: {', '.join(names.values()) or 'no segment'}")
            return 0
        reference = imageio.read_image(args.first)
        label_map = imageio.read_label_map(args.second, reference=reference)
        edited = None if not args.edited else True if args.edited.strip().lower() == "all" else [n.strip() for n in args.edited.split(",") if n.strip()]
        path = write_dicom_seg(label_map, args.first, args.output, model=args.model, edited=edited, fill_missing_uids=args.fill_missing_uids)
        print(f"wrote {path}")
        return 0
    if args.command == "export-measurements":
        check_output_file(args.output, (".csv",), args.overwrite, what="table")
        from ..measure_segmentation import measure_segmentation
        from ..measurements_export import write_structured_csv

        image = imageio.read_scan(args.image)
        label_map = _read_labels(args.labels, image)
        # CT-aware (MR-only parameters withheld, trabecular_hu added); the labels are in our scheme
        result = measure_segmentation(image, label_map, label_scheme="spineanalysis", sex=args.sex, age=args.age)
        path = write_structured_csv(result.measurements, args.output, image=image, include_patient_id=not args.no_patient_id,
                                    quality=result.quality.get("status"))
        print(f"wrote {path}")
        return 0
    raise AssertionError(args.command)
