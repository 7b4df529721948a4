"""Command line: `python -m sonic_core generate|demo|fetch-models`."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .config import CHOICES, RANGES, GenerateConfig
from .errors import SonicInputError
from .models import ModelFetchError

EXAMPLES = Path(__file__).resolve().parent.parent / "assets"


class _Bar:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, label: str):
        self.label, self.t0, self.last = label, None, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.t0 is None:  # the rate counts from the first report (a stage may start late)
            self.t0 = now
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        frac = done / max(total, 1)
        fill = int(30 * frac)
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (30 - fill)}] {done}/{total} frames {rate:.1f} fps")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _add_generate_options(p: argparse.ArgumentParser) -> None:
    docs = GenerateConfig.field_docs()
    for name, rng in RANGES.items():  # the accepted range, as validation checks it
        docs[name] += f" ({rng.describe()}{'; ' + rng.note if rng.note else ''})"
    d = GenerateConfig()
    p.add_argument("--out", "-o", required=False, help="Output MP4 path.")
    p.add_argument("--duration", type=float, default=None, help=docs["duration"])
    p.add_argument("--min-resolution", type=int, default=d.min_resolution, help=docs["min_resolution"])
    p.add_argument("--expand-ratio", type=float, default=d.expand_ratio, help=docs["expand_ratio"])
    p.add_argument("--inference-steps", type=int, default=d.inference_steps, help=docs["inference_steps"])
    p.add_argument("--dynamic-scale", type=float, default=d.dynamic_scale, help=docs["dynamic_scale"])
    p.add_argument("--motion-scale", type=float, default=d.motion_scale, help=docs["motion_scale"])
    p.add_argument("--fps", type=float, default=None,
                   help=docs["fps"] + f" Default: {d.fps:g} for a photo, the video's own rate with --video.")
    p.add_argument("--seed", type=int, default=d.seed, help=docs["seed"])
    p.add_argument("--output", choices=CHOICES["output"], default=d.output, help=docs["output"])
    p.add_argument("--max-full-side", type=int, default=d.max_full_side, help=docs["max_full_side"])
    p.add_argument("--face-index", type=int, default=d.face_index, help=docs["face_index"])
    p.add_argument("--no-blinks", action="store_true", help="Keep the eyes open.")
    p.add_argument("--crf", type=int, default=d.crf, help=docs["crf"])
    p.add_argument("--preset", default=d.preset, help=docs["preset"])
    p.add_argument("--encoder", choices=CHOICES["encoder"], default=d.encoder, help=docs["encoder"])
    p.add_argument("--encode-workers", type=int, default=d.encode_workers, help=docs["encode_workers"])
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=docs["batch_size"])
    p.add_argument("--speech-features", choices=CHOICES["speech_features"], default=d.speech_features,
                   help=docs["speech_features"])
    p.add_argument("--speech-model", default=None, metavar="PATH", help=docs["speech_model"])
    p.add_argument("--transcript", default=None, metavar="TEXT|FILE", help=docs["transcript"])
    p.add_argument("--transcript-language", default=d.transcript_language, metavar="LANG",
                   help=docs["transcript_language"])
    p.add_argument("--motion-model", choices=CHOICES["motion_model"], default=d.motion_model, help=docs["motion_model"])
    p.add_argument("--mouth-painter", choices=CHOICES["mouth_painter"], default=d.mouth_painter, help=docs["mouth_painter"])
    p.add_argument("--alignment-offset", type=float, default=d.alignment_offset, metavar="SECONDS",
                   help=docs["alignment_offset"])
    p.add_argument("--auto-align", action="store_true", help=docs["auto_align"])
    p.add_argument("--no-lip-align", action="store_true", help="Ignore --alignment-offset and --auto-align.")
    p.add_argument("--no-smooth", action="store_true",
                   help="Turn off motion smoothing (on by default: a zero-phase filter on head, brows and, "
                        "lightly, the mouth, keeping closures shut).")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--models-dir", default=None, help="Model cache folder (default: $SONIC_MODELS_DIR or ~/.cache/sonic_core/models).")
    p.add_argument("--quiet", "-q", action="store_true", help="No progress bar.")


def _config_from(args: argparse.Namespace) -> GenerateConfig:
    return GenerateConfig(
        duration=args.duration, min_resolution=args.min_resolution, expand_ratio=args.expand_ratio,
        inference_steps=args.inference_steps, dynamic_scale=args.dynamic_scale, motion_scale=args.motion_scale,
        fps=args.fps if args.fps is not None else GenerateConfig.fps, seed=args.seed, output=args.output,
        max_full_side=args.max_full_side,
        face_index=args.face_index, blinks=not args.no_blinks, crf=args.crf, preset=args.preset,
        batch_size=args.batch_size, motion_model=args.motion_model, encoder=args.encoder,
        encode_workers=args.encode_workers, speech_features=args.speech_features, speech_model=args.speech_model,
        lip_align=not args.no_lip_align, alignment_offset=args.alignment_offset, auto_align=args.auto_align,
        smooth_motion=not args.no_smooth, mouth_painter=args.mouth_painter, transcript=args.transcript,
        transcript_language=args.transcript_language)


def _run(image, audio, out, args) -> int:
    from .models import ensure_face_models
    from .pipeline import generate
    from .video.output import check_output

    cfg = _config_from(args).validate()  # bad settings and outputs are reported before any download
    check_output(out, (image, audio))
    # Said before it happens: the first run downloads and converts the face models.
    ensure_face_models(args.models_dir, log=lambda msg: print(msg, file=sys.stderr))
    result = generate(image, audio, out, cfg, device=args.device, model_dir=args.models_dir,
                      progress=None if args.quiet else _Bar("rendering"))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.summary())
    return 0


def _dub(video, audio, out, args) -> int:
    from .dub import dub
    from .dub.pipeline import check_dub_config
    from .models import ensure_face_models
    from .video.output import check_output

    cfg = _config_from(args).validate()
    check_dub_config(cfg)
    check_output(out, (video, audio))
    ensure_face_models(args.models_dir, log=lambda msg: print(msg, file=sys.stderr))
    result = dub(video, audio, out, cfg, fps=args.fps, device=args.device, model_dir=args.models_dir,
                 progress=None if args.quiet else _Bar("dubbing"),
                 tracking_progress=None if args.quiet else _Bar("tracking the face"))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.summary())
    return 0


def _add_service_commands(sub) -> None:
    """The job service's commands (they need requirements-service.txt)."""
    from .service import MAX_UPLOAD_MB, TTL_DAYS
    queue_help = "Redis URL of the queue and job records, e.g. redis://127.0.0.1:6379/0."
    store_help = ("Where inputs and results live: a folder (file:///path) or a bucket "
                  "(s3://BUCKET?endpoint=http://host:port; credentials from the AWS environment).")
    w = sub.add_parser("worker", help="Serve render jobs from the queue with warm models (job service).")
    w.add_argument("--queue", required=True, help=queue_help)
    w.add_argument("--store", required=True, help=store_help)
    w.add_argument("--device", default=None, help="'cuda:N' for one GPU (one worker per GPU), 'cpu'; default: auto.")
    w.add_argument("--jobs", type=int, default=1,
                   help="Jobs run at once in this worker, in threads sharing its device and models. More throughput "
                        "per GPU comes from more worker processes (see README).")
    w.add_argument("--models-dir", default=None)
    w.add_argument("--visibility-timeout", type=float, default=None, metavar="SECONDS",
                   help="A job not finished this long after delivery is delivered again (a dead worker's job); "
                        "keep it above the longest job. Default: 4 hours.")
    w.add_argument("--name", default=None, help="Worker name in job records (default host:pid).")
    a = sub.add_parser("api", help="Serve the HTTP API (job service): POST/GET/DELETE /v1/jobs, events, /healthz.")
    a.add_argument("--queue", required=True, help=queue_help)
    a.add_argument("--store", required=True, help=store_help)
    a.add_argument("--tokens", default=None, metavar="FILE",
                   help="Bearer tokens, one per line (each a tenant); default: $SONIC_API_TOKENS, comma-separated.")
    a.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
    a.add_argument("--port", type=int, default=8000)
    a.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB, help="Largest request (image + audio), MB.")
    a.add_argument("--ttl-days", type=float, default=TTL_DAYS,
                   help="Inputs and results older than this are deleted (hourly sweep; 0 = never, e.g. when a "
                        f"bucket lifecycle rule does it). Job records expire after {TTL_DAYS:g} days.")
    b = sub.add_parser("batch", help="Submit a CSV/JSONL manifest through the HTTP API and download the results.")
    b.add_argument("manifest", help="CSV (header row) or JSONL: image, audio, optional out, any setting as a column.")
    b.add_argument("--api", required=True, help="The API's base URL, e.g. http://127.0.0.1:8000.")
    b.add_argument("--token", default=None, help="Bearer token (default: $SONIC_API_TOKEN).")
    b.add_argument("--out-dir", default="results", help="Where the MP4s (and batch_results.jsonl) go.")
    b.add_argument("--priority", choices=["interactive", "batch"], default="batch")
    u = sub.add_parser("up", help="The whole job service on this machine: Redis, an S3 server, one worker, the API.")
    u.add_argument("--data", default="sonic-service", help="Folder for the queue's and the store's data and logs.")
    u.add_argument("--port", type=int, default=8000)
    u.add_argument("--workers", type=int, default=1,
                   help="Worker processes per device (several per GPU add throughput: see README).")
    u.add_argument("--jobs", type=int, default=1, help="Jobs each worker runs at once (threads).")
    u.add_argument("--device", default=None,
                   help="Device of the workers; several, comma-separated (cuda:0,cuda:1), start --workers on each.")
    u.add_argument("--models-dir", default=None)
    u.add_argument("--token", default=None, help="API token (default: $SONIC_API_TOKENS' first, else a new one).")
    s = sub.add_parser("submit", help="Queue one job (job service); with --wait, follow it and download the result.")
    s.add_argument("--queue", required=True, help=queue_help)
    s.add_argument("--store", required=True, help=store_help)
    s.add_argument("--image", required=True)
    s.add_argument("--audio", required=True)
    s.add_argument("--priority", choices=["interactive", "batch"], default="batch")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="A generate setting, e.g. --set min_resolution=1024 (repeatable).")
    s.add_argument("--wait", action="store_true", help="Wait for the job, show its progress.")
    s.add_argument("--out", default=None, help="With --wait: download the result here.")


def _settings_from(pairs: list[str]) -> dict:
    import json

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SonicInputError(f"--set '{pair}' is not NAME=VALUE.")
        try:
            out[name.strip()] = json.loads(value)
        except ValueError:
            out[name.strip()] = value
    return out


def _worker(args) -> int:
    from .service import require_service_deps

    require_service_deps(args.store)
    from .service.tasks import DEFAULT_VISIBILITY_TIMEOUT_S, run_worker

    run_worker(args.queue, args.store, jobs=args.jobs, device=args.device, models_dir=args.models_dir,
               visibility_timeout=args.visibility_timeout or DEFAULT_VISIBILITY_TIMEOUT_S, name=args.name)
    return 0


def _submit(args) -> int:
    from .service import require_service_deps

    require_service_deps(args.store)
    from .service.client import Client

    if args.out and not args.wait:
        raise SonicInputError("--out needs --wait (the result is downloaded once the job is done).")
    client = Client(args.queue, args.store)
    job = client.submit(args.image, args.audio, _settings_from(args.set), priority=args.priority)
    print(job.id)
    if not args.wait:
        return 0
    bar = _Bar(f"job {job.id[:8]}")
    job = client.wait(job.id, on_progress=lambda j: j.frames_total and bar(j.frames_done, j.frames_total))
    if job.state != "done":
        print(f"error: job {job.id} {job.state}: {job.error}", file=sys.stderr)
        return 2
    if args.out:
        print(client.download(job.id, args.out))
    return 0


def _api(args) -> int:
    from .service import require_service_deps

    require_service_deps(args.store, api=True)
    from .service.api import serve

    serve(args.queue, args.store, args.tokens, args.host, args.port, args.max_upload_mb, args.ttl_days)
    return 0


def _batch(args) -> int:
    import os

    from .service.batch import run_batch
    from .service.http import ApiClient

    token = args.token or os.environ.get("SONIC_API_TOKEN")
    if not token:
        raise SonicInputError("batch needs --token or $SONIC_API_TOKEN.")

    def progress(jobs_done, jobs, frames_done, frames_total):
        sys.stderr.write(f"\r{jobs_done}/{jobs} clips, {frames_done}/{frames_total} frames")
        sys.stderr.flush()

    failed = run_batch(ApiClient(args.api, token), args.manifest, args.out_dir, args.priority, progress=progress)
    sys.stderr.write("\n")
    print(f"results in {args.out_dir} ({failed} failed)")
    return 2 if failed else 0


def _up(args) -> int:
    from .service import require_service_deps

    require_service_deps(api=True)
    from .service.local import up

    return up(args.data, args.port, args.jobs, args.device, args.models_dir, args.token, args.workers)


SERVICE_COMMANDS = {"worker": _worker, "submit": _submit, "api": _api, "batch": _batch, "up": _up}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs (no partial file is left)."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonic_core", description="Sonic: one portrait + speech -> talking-head MP4.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="Animate a portrait with a speech recording, or dub a video with new speech.")
    face = g.add_mutually_exclusive_group(required=True)
    face.add_argument("--image", help="Portrait photo (jpg, png, webp, ...).")
    face.add_argument("--video", help="Dubbing: a video of the person speaking (mp4, mov, mkv, webm). Head, eyes and "
                                      "background stay the video's; the mouth follows --audio, drawn from the "
                                      "person's own mouths in the video. The output keeps the video's size and "
                                      "rate and lasts as long as the audio (a shorter video plays back and forth).")
    g.add_argument("--audio", required=True, help="Speech (wav, mp3, flac, ogg/opus, m4a/aac, or a video's sound track).")
    _add_generate_options(g)
    dm = sub.add_parser("demo", help="Run on the example portrait and speech shipped in assets/.")
    _add_generate_options(dm)
    fm = sub.add_parser("fetch-models", help="Download and convert the face models into the cache, then exit.")
    fm.add_argument("--models-dir", default=None)
    _add_service_commands(sub)
    args = parser.parse_args(argv)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (main() called from a thread): keep the default
        pass
    try:
        if args.command == "fetch-models":
            from .models import ensure_face_models

            print(ensure_face_models(args.models_dir, log=print))
            return 0
        if args.command in SERVICE_COMMANDS:
            return SERVICE_COMMANDS[args.command](args)
        if args.command == "demo":
            return _run(EXAMPLES / "grace_hopper.jpg", EXAMPLES / "speech.wav", args.out or "sonic_demo.mp4", args)
        if not args.out:
            parser.error("generate needs --out PATH.mp4")
        if args.video is not None:
            return _dub(args.video, args.audio, args.out, args)
        return _run(args.image, args.audio, args.out, args)
    except SonicInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModelFetchError as e:
        print(f"error: the face models are not in the model cache and could not be fetched: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("interrupted; no partial video was left behind", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
