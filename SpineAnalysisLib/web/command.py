"""``spineanalysis review``: serve the review page (argument checks need no trame; the server does).

Checks happen before anything is started: the image and labels must be readable, ``--data-dir`` a folder,
the port free. Each refusal is one line ``spineanalysis: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from .. import imageio
from ..cli.options import add_device_option, add_label_scheme_options
from ..errors import InputError

INSTALL_HINT = "the review page needs trame-slicer: run 'make web' (environment .venv-web) or pip install 'spineanalysis[web]'"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("image", nargs="?", help="MRI to open (NIfTI, NRRD, MHA or a DICOM series folder)")
    parser.add_argument("labels", nargs="?", help="its label map (same grid): ours, TotalSegmentator, VerSe/TPTBox or SPINEPS (see --label-scheme)")
    add_label_scheme_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    add_device_option(parser, help="device of the segmentation job (auto: CUDA, then MPS, then CPU)")
    parser.add_argument("--data-dir", help="folder whose images the page may list and open (nothing outside it)")
    return parser


def check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise InputError(f"--port {port}: not a port number (1-65535)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise InputError(f"cannot listen on {host}:{port} ({error.strerror or error}); is another server using this port? choose another with --port") from None


def check_arguments(args: argparse.Namespace) -> None:
    if args.labels and not args.image:
        raise InputError("labels given without an image")
    if args.bodies and not args.labels:
        raise InputError("--bodies given without LABELS (the whole-vertebra map it goes with)")
    for what, path in (("image", args.image), ("labels", args.labels), ("--bodies", args.bodies)):
        if path and not os.path.exists(path):
            raise InputError(f"{what} {path}: no such file or folder")
    if args.data_dir and not os.path.isdir(args.data_dir):
        raise InputError(f"--data-dir {args.data_dir}: not a folder")
    check_port(args.host, args.port)


def trame_available() -> bool:
    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Check the arguments, open the case, serve until interrupted."""
    check_arguments(args)
    if not trame_available():
        raise InputError(INSTALL_HINT)
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless rendering without X
    from .app import ReviewApp  # noqa: PLC0415 - trame is optional
    from .scene import check_modality, read_labels

    image = translation = None
    if args.image:  # refusals (CT without labels, labels in no scheme, whole vertebrae without bodies) before Slicer starts
        image = imageio.read_image(args.image)
        check_modality(image, Path(args.image), with_labels=bool(args.labels))
        if args.labels:
            translation = read_labels(args.labels, image, args.label_scheme, args.bodies)
    app = ReviewApp(data_dir=args.data_dir, device=args.device)
    if args.image:
        app.load(args.image, args.labels, args.label_scheme, args.bodies, translation, image)  # InputError: one line, before the server starts
    where = "this computer only" if args.host in ("127.0.0.1", "localhost", "::1") else "THE NETWORK: put it behind an authenticating proxy (docs/web.md)"
    print(f"spineanalysis review: serving http://{args.host}:{args.port}/ on {args.host}, reachable from {where}", flush=True)
    app.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False, disable_logging=True)
    return 0
