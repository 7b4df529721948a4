"""Train the viseme network shipped as sonic_core/motion/viseme_net.safetensors (CPU, minutes).

    python training/train_viseme_net.py [--clips 2400] [--steps 2500] [--out sonic_core/motion/viseme_net.safetensors]

Data is generated, never downloaded: espeak-ng (`apt-get install espeak-ng`) speaks random
word sequences from pocketsphinx's CMU dictionary and the tuning Harvard sentences in English
accents and voice variants and in other languages' voices, at random speeds and pitches, with
the exact phone timings libespeak-ng reports (tests/espeak_timing.py; stops from their closure).
Each frame is labelled with the viseme of its phone (sonic_core.audio.ipa -> motion.visemes).
Every clip is seen in several augmented versions: vocal-tract-length warping of the filterbank,
white/pink noise and synthetic music beds at 5-30 dB SNR, a telephone band at 8 kHz, MP3, and
reverberation; crops get SpecAugment frequency masks. The held-out voices of benchmarks/lipsync_motion.py (flite) and its held-out
sentences are never used. Prints frame accuracy on a validation split of the generated data;
the held-out voices are measured by the benchmark, not here.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sonic_core.audio.ipa import to_arpabet  # noqa: E402
from sonic_core.motion import viseme_net as vn  # noqa: E402

ENGLISH = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = ("", "", "+f1", "+f2", "+f3", "+f4", "+f5", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+klatt",
            "+klatt2", "+klatt3", "+klatt4", "+croak", "+Andrea", "+annie", "+belinda", "+steph", "+david", "+max",
            "+john", "+edward", "+linda", "+aunty", "+grandma", "+grandpa", "+michel")
OTHER = ("es", "de", "fr-fr", "it", "pt", "nl", "pl", "ru", "sv", "cs", "hi", "id", "tr")


def words():
    from pocketsphinx import get_model_path

    out = []
    with open(os.path.join(get_model_path("en-us"), "cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            w = line.split(" ", 1)[0]
            if w.isalpha() and 2 <= len(w) <= 10:
                out.append(w)
    return out


def frame_labels(segments, n: int) -> np.ndarray:
    """Class index per 10 ms frame (frame k centred on (k + 0.5) / 100 s) from [(start, end, ARPAbet phones)]:
    each phone's visemes as the motion model splits them (`phonetic._segments_from_phones`)."""
    from sonic_core.audio.phonemes import PhoneSegment
    from sonic_core.motion.phonetic import _segments_from_phones

    phones = []
    for start, end, arp in segments:
        d = (end - start) / max(len(arp), 1)
        phones += [PhoneSegment(a, start + k * d, start + (k + 1) * d) for k, a in enumerate(arp)]
    lab = np.zeros(n, np.int64)  # REST
    idx = {c: i for i, c in enumerate(vn.CLASSES)}
    for s, e, v in _segments_from_phones(phones):
        i0, i1 = int(np.ceil(s * 100 - 0.5)), int(np.ceil(e * 100 - 0.5))
        lab[max(0, i0):min(n, i1)] = idx[v]
    return lab


def make_text(rng: random.Random, vocab, sentences) -> str:
    if rng.random() < 0.25:
        return rng.choice(sentences)
    ws = [rng.choice(vocab) for _ in range(rng.randint(4, 12))]
    for k in range(1, len(ws) - 1):
        if rng.random() < 0.12:
            ws[k] += rng.choice([",", "."])
    return " ".join(ws)


def _padded(rng: random.Random, x, rate, segments):
    lead, tail = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6)
    x = np.concatenate([np.zeros(int(lead * rate), np.float32), x, np.zeros(int(tail * rate), np.float32)])
    return x, rate, [(a + lead, b + lead, arp) for a, b, arp in segments]


def utterances(rng: random.Random, vocab, sentences, festival_share: float):
    """(samples, rate, [(start, end, ARPAbet phones)]) forever: espeak-ng utterances, and with
    probability `festival_share` per utterance, Festival diphone voices (synthesised 20 at a time)."""
    from training import festival_speech as fest

    batch = 20
    p_batch = festival_share / (batch - festival_share * (batch - 1)) if fest.FESTIVAL and festival_share > 0 else 0.0
    while True:
        if rng.random() < p_batch:
            texts = [make_text(rng, vocab, sentences) for _ in range(batch)]
            for r in fest.synthesize(texts, rng.choice(fest.VOICES), rng.uniform(0.7, 1.6)):
                if r is not None:
                    yield _padded(rng, r[0], r[1], [(a, b, (arp,) if arp != "SIL" else ()) for a, b, arp in r[2]])
        else:
            u = make_utterance(rng, vocab, sentences)
            if u is not None:
                yield u


def make_utterance(rng: random.Random, vocab, sentences):
    from tests.espeak_timing import speak_with_phonemes, stop_closures

    lang = rng.random()
    voice = (rng.choice(ENGLISH) if lang < 0.75 else rng.choice(OTHER)) + rng.choice(VARIANTS)
    try:
        x, rate, ph = speak_with_phonemes(make_text(rng, vocab, sentences), voice=voice, speed=rng.randint(95, 270),
                                          pitch=rng.randint(15, 85))
    except ValueError:
        return None
    ph = stop_closures(ph, x, rate)
    return _padded(rng, x, rate, [(p.start, p.end, to_arpabet(p.ipa)) for p in ph])


def augment(x, rate, rng: np.random.Generator):
    """Audio-side augmentation -> 16 kHz mono."""
    from tests.lipsync_corpus import (
        _to,
        codec_roundtrip,
        mix_at_snr,
        music_bed,
        pink_noise,
        telephone,
    )

    u = rng.random()
    if u < 0.25:
        x, rate = telephone(x, rate)
    elif u < 0.32:
        x, rate = codec_roundtrip(x, rate, "libmp3lame", int(rng.choice([32000, 64000])))
    x = _to(x, rate, 16000)
    if rng.random() < 0.2:  # reverberation: exponentially decaying noise tail
        rt = rng.uniform(0.15, 0.6)
        m = int(rt * 16000)
        ir = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m)
        ir[0] = 1.0 / max(rng.uniform(0.1, 0.6), 1e-3)
        x = np.convolve(x, ir / np.abs(ir).sum() * 4)[: len(x)].astype(np.float32)
    u = rng.random()
    if u < 0.25:
        x = mix_at_snr(x, pink_noise(len(x), rng) if rng.random() < 0.5 else rng.standard_normal(len(x)).astype(np.float32),
                       rng.uniform(5, 30))
    elif u < 0.45:
        x = mix_at_snr(x, music_bed(len(x), 16000, rng), rng.uniform(5, 25))
    return x * rng.uniform(0.05, 1.0)


def build(n_clips: int, versions: int, seed: int, festival_share: float):
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    from tests.lipsync_corpus import TUNING_TEXT

    data = []
    t0 = time.perf_counter()
    for x, rate, segs in utterances(rng, words(), TUNING_TEXT, festival_share):
        group = []
        for v in range(versions):
            y = augment(x, rate, nrng) if v else _resample(x, rate)
            feats = vn.normalize(vn.log_mel(y, warp=float(nrng.uniform(0.86, 1.16)) if v else 1.0))
            group.append((feats, frame_labels(segs, len(feats))))
        data.append(group)
        if len(data) % 50 == 0:
            print(f"  {len(data)} clips ({time.perf_counter() - t0:.0f} s)", flush=True)
        if len(data) >= n_clips:
            break
    rng.shuffle(data)  # the validation split takes the last clips (all their versions): a mix of every source
    return [item for group in data for item in group]


def _resample(x, rate):
    from tests.lipsync_corpus import _to

    return _to(x, rate, 16000)


def batches(data, rng: np.random.Generator, size: int, frames: int, freq_masks: int = 2):
    """Random crops; each with up to `freq_masks` bands of 1-6 mel channels zeroed (SpecAugment:
    no single formant region may decide a class, so another voice's spectral detail matters less)."""
    import torch

    xs, ys = [], []
    for _ in range(size):
        f, lab = data[int(rng.integers(len(data)))]
        if len(f) > frames:
            a = int(rng.integers(len(f) - frames))
            f, lab = f[a:a + frames], lab[a:a + frames]
        if freq_masks:
            f = f.copy()
            for _ in range(int(rng.integers(freq_masks + 1))):
                w = int(rng.integers(1, 7))
                a = int(rng.integers(0, vn.N_MELS - w))
                f[:, a:a + w] = 0.0
        pad = frames - len(f)
        xs.append(np.pad(f, ((0, pad), (0, 0))))
        ys.append(np.pad(lab, (0, pad), constant_values=-100))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def evaluate(model, data):
    import torch

    right = total = 0
    with torch.inference_mode():
        for f, lab in data:
            pred = model(torch.from_numpy(f)[None])[0].argmax(-1).numpy()
            right += int((pred == lab).sum())
            total += len(lab)
    return right / max(total, 1)


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2400)
    ap.add_argument("--versions", type=int, default=3, help="augmented versions per clip (the first is clean)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--festival-share", type=float, default=0.4,
                    help="share of utterances from Festival's diphone voices (0 = espeak-ng only; needs festival)")
    ap.add_argument("--freq-masks", type=int, default=2, help="SpecAugment frequency masks per crop (0 = off)")
    ap.add_argument("--data-cache", default="", help="keep the generated data in this file and reuse it")
    ap.add_argument("--out", default=str(vn.WEIGHTS))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    cache = Path(args.data_cache) if args.data_cache else None
    if cache is not None and cache.is_file():
        import pickle

        data = pickle.loads(cache.read_bytes())
    else:
        data = build(args.clips, args.versions, args.seed, args.festival_share)
        if cache is not None:
            import pickle

            cache.write_bytes(pickle.dumps(data))
    val_n = max(args.versions, len(data) // 20 // args.versions * args.versions)
    train, val = data[:-val_n], data[-val_n:]
    print(f"data: {len(train)} train / {len(val)} validation sequences in {time.perf_counter() - t0:.0f} s", flush=True)
    counts = np.bincount(np.concatenate([lab for _, lab in train]), minlength=len(vn.CLASSES)).astype(np.float64)
    weight = torch.tensor((counts.sum() / np.maximum(counts, 1) / len(counts)) ** 0.3, dtype=torch.float32)
    model = vn.VisemeNet(args.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.1)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=-100, label_smoothing=0.05)
    rng = np.random.default_rng(args.seed)
    t1 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = batches(train, rng, 24, 400, args.freq_masks)
        loss = loss_fn(model(x).reshape(-1, len(vn.CLASSES)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            model.eval()
            acc = evaluate(model, val)
            model.train()
            print(f"step {step}: loss {loss.item():.3f}, validation frame accuracy {acc:.3f} "
                  f"({time.perf_counter() - t1:.0f} s)", flush=True)
    model.eval()
    train_acc = evaluate(model, train[: len(val)])
    val_acc = evaluate(model, val)
    vn.save(model, args.out, {"trained_on": "espeak-ng voices and languages and Festival diphone voices (English, "
                                            "Italian, Finnish), generated (training/train_viseme_net.py)",
                              "clips": args.clips, "versions": args.versions, "steps": args.steps, "seed": args.seed,
                              "freq_masks": args.freq_masks, "festival_share": args.festival_share,
                              "train_frame_accuracy": f"{train_acc:.3f}", "validation_frame_accuracy": f"{val_acc:.3f}"})
    print(f"saved {args.out}: {sum(p.numel() for p in model.parameters())} parameters, frame accuracy "
          f"train {train_acc:.3f} / validation {val_acc:.3f}, {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
