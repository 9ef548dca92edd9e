"""Issue 14 diagnostic (docs/RESULTS.md, "Why the codes missed the pitch"): how fast do the codes learn each
bar's pitches in order? Trains the small 2-bar model (AE, bag of words + sequence head) on prepared Nottingham
shards with a bare loop and, every 200 steps, reports the share of Pitch slots the sequence head names from the
codes alone (valid and train windows), the other slots, and the teacher-forced Pitch accuracy. Variants replace
parts of the model: ``--pool flat`` (each slot's own weights into the bar code), ``--head mem`` (the head reads
the code by attention over 16 memory vectors), ``--key canonical`` (each window moved to C major / A minor by a
Krumhansl profile).

    python docs/scripts/issue14_code_pitch.py NAME --data data/nottingham-2bar [--key random|none|canonical]
        [--pool mean|slots|flat] [--head seq|mem] [--bf16] [--steps 1200] [--train-windows N] [--lr 5e-4]

It writes NAME.jsonl in the current folder. The options are experiment code, kept as run; the package's own
versions are ``bar_pooling: flat`` and ``sequence_head_memory`` (midistruct.model.modeling)."""
import argparse, json, math, sys, time
import numpy as np, torch
from midistruct.model.configuration import MidiStructConfig
from midistruct.model.modeling import MidiStructModel as MidiStruct, slot_targets
from midistruct.shards.dataset import WindowDataset, collate, window_item
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import load_tokenizer

p = argparse.ArgumentParser()
p.add_argument("name"); p.add_argument("--data", default="data/nottingham-2bar"); p.add_argument("--key", default="random")
p.add_argument("--steps", type=int, default=800); p.add_argument("--train-windows", type=int, default=0)
p.add_argument("--lr", type=float, default=5e-4); p.add_argument("--bs", type=int, default=32)
p.add_argument("--mode", default="ae"); p.add_argument("--pool", default="mean"); p.add_argument("--bar-dim", type=int, default=64); p.add_argument("--d", type=int, default=256); p.add_argument("--bf16", action="store_true"); p.add_argument("--head", default="seq")
a = p.parse_args()
torch.manual_seed(0); torch.set_num_threads(1)
DATA = a.data
tok = load_tokenizer(DATA); vocab = RemiVocab(tok); V = len(tok)
pitch_of = np.full(V, -1)
for i in range(V):
    if tok[i].startswith("Pitch_"): pitch_of[i] = int(tok[i].split("_")[1])
is_pitch = torch.tensor(pitch_of >= 0)
# Krumhansl-Kessler profiles
MAJ = np.array([6.35,2.23,3.48,2.33,4.38,4.09,2.52,5.19,2.39,3.66,2.29,2.88])
MIN = np.array([6.33,2.68,3.52,5.38,2.60,3.53,2.54,4.75,3.98,2.69,3.34,3.17])
PROF = np.stack([np.roll(MAJ, k) for k in range(12)] + [np.roll(MIN, k) for k in range(12)])
PROF = (PROF - PROF.mean(1, keepdims=True)) / PROF.std(1, keepdims=True)
def key_shift(ids):
    ps = pitch_of[ids]; ps = ps[ps >= 0]
    h = np.bincount(ps % 12, minlength=12).astype(float)
    if h.std() == 0: return 0
    h = (h - h.mean()) / h.std()
    k = int(np.argmax(PROF @ h)); tonic = k % 12 if k < 12 else (k % 12 + 3) % 12  # minor -> relative major
    s = -tonic; s = (s + 5) % 12 - 5   # in [-5, 6]
    return s
train = WindowDataset([DATA], "train", transpose=(-5, 6) if a.key == "random" else (0, 0))
valid = WindowDataset([DATA], "valid")
def item(ds, i, epoch):
    if a.key == "canonical":
        ids, bars = ds.arrays[0].window(i)
        s = key_shift(ids); lo, hi = vocab.allowed_shifts(ids, -6, 6)
        if lo <= s <= hi: ids = vocab.shift_pitches(ids, s)
        return window_item(ids, bars)
    ds.set_epoch(epoch); return ds[i]
cfg = MidiStructConfig(vocab_size=V, d_model=a.d, n_heads=4, encoder_layers=4, decoder_layers=4, ffn_dim=4*a.d,
    dropout=0.1, max_positions=256, max_bars=8, latent_dim_bar=a.bar_dim, bar_pooling="mean" if a.pool == "flat" else a.pool, pool_queries=16, latent_dim_segment=128, latent_mode=a.mode,
    free_bits=32, word_dropout=0.25, bag_of_words=1.0, sequence_head=1.0, sequence_head_layers=1, sequence_slots=64,
    bar_token_id=vocab.bar_id if hasattr(vocab, "bar_id") else 4)
model = MidiStruct(cfg)
if a.pool == "flat":
    from midistruct.model.modeling import bar_slots
    K = 24
    class Flat(torch.nn.Module):
        def __init__(s):
            super().__init__(); s.proj = torch.nn.Linear(K * a.d, a.d)
        def forward(s, states, *, attention_mask, bar_ids, n_bars):
            B, T, D = states.shape
            slot = bar_slots(bar_ids)
            keep = attention_mask.bool() & (slot < K)
            where = torch.where(keep, bar_ids.clamp(max=n_bars - 1) * K + slot, n_bars * K)
            grid = states.new_zeros(B, n_bars * K + 1, D).scatter(1, where[..., None].expand(B, T, D), states * keep[..., None])
            grid = grid[:, :-1].view(B, n_bars, K * D)
            bars = torch.arange(n_bars, device=bar_ids.device)
            mask = ((bar_ids[:, None, :] == bars[None, :, None]) & attention_mask.bool()[:, None, :]).any(-1)
            return s.proj(grid).float(), mask
    model.bottleneck.bar_pool = Flat()
if a.head == "mem":
    class MemHead(torch.nn.Module):
        def __init__(s, in_dim, D, V, M=16, K=64):
            super().__init__(); s.M, s.D = M, D
            s.mem = torch.nn.Linear(in_dim, M * D); s.q = torch.nn.Embedding(K, D)
            s.attn = torch.nn.MultiheadAttention(D, 4, batch_first=True); s.ln = torch.nn.LayerNorm(D)
            s.ffn = torch.nn.Sequential(torch.nn.Linear(D, 4 * D), torch.nn.GELU(), torch.nn.Linear(4 * D, D)); s.out = torch.nn.Linear(D, V)
        def forward(s, codes, *, n_slots):
            B, NB, _ = codes.shape
            mem = s.mem(codes).view(B * NB, s.M, s.D)
            q = s.q.weight[:n_slots][None].expand(B * NB, n_slots, s.D)
            h, _ = s.attn(q, mem, mem); h = h + q; h = h + s.ffn(s.ln(h))
            return s.out(h).view(B, NB, n_slots, -1)
    model.sequence_head = MemHead(64 + 128, a.d, V)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
n_train = a.train_windows or len(train)
rng = np.random.default_rng(0)
vpick = np.random.default_rng(1).permutation(len(valid))[:384]
tpick = np.random.default_rng(2).permutation(n_train)[:384]
def measure(ds, pick, epoch=0):
    model.eval(); right = {"P": [0, 0], "o": [0, 0]}; tf = [0, 0]
    with torch.no_grad():
        for st in range(0, len(pick), 128):
            b = collate([item(ds, int(i), epoch) for i in pick[st:st+128]])
            out = model(**b, sample=False)
            lat = model.encode(b["input_ids"], b["attention_mask"], b["bar_ids"], sample=False)
            codes, bar_ids = model.bar_codes(lat, b["bar_ids"])
            tg = slot_targets(b["labels"], bar_ids, n_bars=codes.shape[1], max_slots=64)
            g = model.sequence_head(codes, n_slots=tg.shape[-1]).argmax(-1)
            real = tg != -100; ip = is_pitch[tg.clamp(min=0)] & real
            right["P"][0] += int((g == tg)[ip].sum()); right["P"][1] += int(ip.sum())
            right["o"][0] += int((g == tg)[real & ~ip].sum()); right["o"][1] += int((real & ~ip).sum())
            lab = b["labels"]; lp = is_pitch[lab.clamp(min=0)] & (lab != -100)
            tf[0] += int((out.logits.argmax(-1) == lab)[lp].sum()); tf[1] += int(lp.sum())
    model.train()
    return right["P"][0] / right["P"][1], right["o"][0] / right["o"][1], tf[0] / tf[1]
log = open(f"{a.name}.jsonl", "w"); t0 = time.time(); epoch = 0; order = rng.permutation(n_train); pos = 0
model.train()
for step in range(1, a.steps + 1):
    if pos + a.bs > n_train: epoch += 1; order = rng.permutation(n_train); pos = 0
    b = collate([item(train, int(i), epoch) for i in order[pos:pos + a.bs]]); pos += a.bs
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=a.bf16):
        out = model(**b, beta=0.1 if a.mode == "vae" else 0.0)
    opt.zero_grad(); out.loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step()
    if step % 200 == 0 or step == a.steps:
        vp, vo, vtf = measure(valid, vpick); tp, to, ttf = measure(train, tpick, epoch)
        r = dict(step=step, min=round((time.time() - t0) / 60, 2), seq=float(out.seq_loss), valid_pitch_slots=round(vp, 3),
                 valid_other=round(vo, 3), valid_tf_pitch=round(vtf, 3), train_pitch_slots=round(tp, 3), train_tf_pitch=round(ttf, 3))
        print(json.dumps(r), flush=True); log.write(json.dumps(r) + "\n"); log.flush()
