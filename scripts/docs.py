#!/usr/bin/env python3
"""Checks the documentation: README.md, CONTRIBUTING.md and the book in docs/.

- every relative link (and #anchor) resolves, and every page of docs/src is in
  SUMMARY.md;
- every `<!-- help: CMD -->` block equals `leadrelay CMD --help` (`--update`
  rewrites them);
- every ```toml snippet is merged over the embedded default configuration and
  must pass `leadrelay check --offline` (```toml,norun: parsed only);
- every ```sh snippet runs: a page's snippets run in order, as one script
  (`bash -euo pipefail`), in a clean environment and a fresh folder — the
  README and the first-lead tutorial in a fresh clone of the repository, as a
  newcomer would run them (```sh,norun: syntax-checked only, for commands that
  need a real vendor account, a container runtime or root on a real host).

Usage: scripts/docs.py [--update] [--links-only] [--page PATH] [--bin PATH]
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "src"
FENCE = re.compile(r"^```(.*)$")
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")
HELP = re.compile(r"^<!-- help: (.*?) -->$")

# Pages whose shell snippets run in a fresh clone (they install leadrelay).
CLONE_PAGES = {"README.md", "docs/src/tutorials/first-lead.md"}


def pages():
    """README, CONTRIBUTING, then the book in SUMMARY order."""
    out = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    for target in LINK.findall((DOCS / "SUMMARY.md").read_text()):
        out.append(DOCS / target)
    return out


def blocks(text):
    """Fenced code blocks: (info, body, first line number)."""
    out, info, body, start = [], None, [], 0
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if m and info is None:
            info, body, start = m.group(1).strip(), [], n
        elif line.startswith("```") and info is not None:
            out.append((info, "\n".join(body), start))
            info = None
        elif info is not None:
            body.append(line)
    return out


def slug(heading):
    """mdBook's (and GitHub's) anchor for a heading."""
    s = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip()).lower()
    s = "".join(c for c in s if c.isalnum() or c in " -_")
    return s.replace(" ", "-")


def anchors(path):
    found, fence = set(), False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"^#{1,6} ", line):
            found.add(slug(line.lstrip("#")))
    return found


def check_links(all_pages):
    errors = []
    listed = {p.resolve() for p in all_pages}
    for p in sorted(DOCS.rglob("*.md")):
        if p.name != "SUMMARY.md" and p.resolve() not in listed:
            errors.append(f"{p.relative_to(ROOT)}: not listed in docs/src/SUMMARY.md")
    for p in all_pages:
        if not p.exists():
            errors.append(f"{p.relative_to(ROOT)}: listed in SUMMARY.md but missing")
            continue
        text, fence = p.read_text(), False
        for n, line in enumerate(text.split("\n"), 1):
            if line.startswith("```"):
                fence = not fence
                continue
            if fence:
                continue
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if re.match(r"^[a-z]+:", target):
                    continue
                file, _, anchor = target.partition("#")
                dest = (p.parent / file).resolve() if file else p.resolve()
                where = f"{p.relative_to(ROOT)}:{n}"
                if not dest.exists():
                    errors.append(f"{where}: link to {target}: no such file")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    errors.append(f"{where}: link to {target}: no heading #{anchor}")
                elif (
                    dest.suffix == ".md"
                    and p.is_relative_to(DOCS)
                    and not dest.is_relative_to(DOCS)
                ):
                    errors.append(f"{where}: link to {target}: leaves the book")
    return errors


def check_help(all_pages, leadrelay, update):
    errors = []
    for p in all_pages:
        lines = p.read_text().split("\n")
        changed = False
        for i, line in enumerate(lines):
            m = HELP.match(line)
            if not m:
                continue
            args = m.group(1).split()
            if args != ["--help"]:
                args.append("--help")
            # A clean environment: clap shows `[env: NAME=value]` for set
            # variables and wraps to COLUMNS.
            out = subprocess.run(
                [leadrelay, *args],
                capture_output=True,
                text=True,
                check=False,
                env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
            )
            want = out.stdout.rstrip("\n").split("\n")
            if out.returncode != 0 or not lines[i + 1].startswith("```text"):
                errors.append(f"{p.relative_to(ROOT)}:{i + 1}: leadrelay {' '.join(args)} failed")
                continue
            end = lines.index("```", i + 2)
            if lines[i + 2 : end] != want:
                if update:
                    lines[i + 2 : end] = want
                    changed = True
                else:
                    errors.append(
                        f"{p.relative_to(ROOT)}:{i + 1}: help of `leadrelay {' '.join(args)}` "
                        "differs from the binary (scripts/docs --update rewrites it)"
                    )
        if changed:
            p.write_text("\n".join(lines))
    return errors


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        elif isinstance(v, list) and v and isinstance(v[0], dict) and isinstance(base.get(k), list):
            base[k] = base[k] + v
        else:
            base[k] = v
    return base


def env_names(value, found):
    """Every environment variable a configuration names (`*_env` settings)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and k.endswith("_env"):
                found[v] = k
            elif isinstance(v, list) and k.endswith("_envs"):
                for name in v:
                    found[name] = k
            elif isinstance(v, dict) and k == "secret_headers":
                for name in v.values():
                    found[name] = k
            else:
                env_names(v, found)
    elif isinstance(value, list):
        for v in value:
            env_names(v, found)
    return found


_SERVICE_ACCOUNT = None


def service_account_key():
    """A throwaway Google service-account key (a fresh RSA key, no account)."""
    global _SERVICE_ACCOUNT
    if _SERVICE_ACCOUNT is None:
        pem = subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            capture_output=True, text=True, check=True,
        ).stdout
        _SERVICE_ACCOUNT = json.dumps({
            "type": "service_account",
            "client_email": "docs-check@example.iam.gserviceaccount.com",
            "private_key": pem,
            "token_uri": "https://oauth2.googleapis.com/token",
        })
    return _SERVICE_ACCOUNT


def dummy(setting):
    if setting == "service_account_env":
        return service_account_key()
    if "url" in setting:
        return "https://hooks.example.com/services/T000/B000/docs-check"
    if "secret" in setting and "webhook" in setting:
        return "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return "docs-check-dummy-secret-0123456789abcdef"


_DEFAULT_CONFIG = {}


def default_config(leadrelay):
    """The embedded default configuration, parsed (a fresh copy each call)."""
    if leadrelay not in _DEFAULT_CONFIG:
        _DEFAULT_CONFIG[leadrelay] = subprocess.run(
            [leadrelay, "config", "default"], capture_output=True, text=True, check=True
        ).stdout
    return tomllib.loads(_DEFAULT_CONFIG[leadrelay])


def check_toml(page, body, line, leadrelay, workdir):
    import tomli_w  # installed by scripts/test into target/test-venv

    where = f"{page}:{line}"
    try:
        snippet = tomllib.loads(body)
    except tomllib.TOMLDecodeError as e:
        return [f"{where}: TOML snippet does not parse: {e}"]
    config = merge(default_config(leadrelay), snippet)
    path = Path(workdir) / "snippet.toml"
    path.write_text(tomli_w.dumps(config))
    env = {"PATH": os.environ["PATH"], "HOME": workdir}
    for name, setting in env_names(config, {}).items():
        env[name] = dummy(setting)
    out = subprocess.run(
        [leadrelay, "check", "--offline", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        return [f"{where}: TOML snippet fails `leadrelay check --offline`:\n{out.stdout}{out.stderr}"]
    return []


def run_page(page, script, env, cwd, timeout):
    """Runs one page's shell snippets as one script; kills what it left running."""
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        failed = proc.returncode != 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        failed, out = True, out + f"\n(timed out after {timeout} s)"
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if failed:
        # What the page's background servers said, for the diagnosis.
        logs = "".join(
            f"\n--- {log.name} (last lines):\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            for log in sorted(Path(cwd).glob("*.log"))
        )
        return [f"{page}: its shell snippets failed (exit {proc.returncode}):\n{out[-4000:]}{logs}"]
    return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--update", action="store_true", help="rewrite the --help blocks")
    ap.add_argument("--links-only", action="store_true")
    ap.add_argument("--page", action="append", help="only these pages (paths from the root)")
    ap.add_argument(
        "--bin",
        help="use this leadrelay binary instead of installing it: skips the install walk "
        "(README and first-lead tutorial) — for quick local runs, never in CI",
    )
    args = ap.parse_args()

    all_pages = pages()
    errors = check_links(all_pages)
    if args.links_only:
        return report(errors, {})

    work = Path(tempfile.mkdtemp(prefix="leadrelay-docs-"))
    install_root = work / "install"
    # Where the walk installs leadrelay (kept between local runs).
    target = Path(os.environ.get("LEADRELAY_DOCS_TARGET", ROOT / "target" / "docs-install"))
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    rustup_home = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
    clean_env = {
        # A clean shell: what a newcomer's terminal has, nothing from this one.
        "PATH": f"{install_root}/bin:{cargo_home}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work / "home"),
        "CARGO_HOME": str(cargo_home),
        "RUSTUP_HOME": str(rustup_home),
        "CARGO_INSTALL_ROOT": str(install_root),
        "CARGO_TARGET_DIR": str(target),
        # The walk runs the README's `cargo install` as written; only the
        # optimiser is turned off (a release build takes twice as long and
        # optimisation does not change whether the steps work). Debug
        # assertions stay off, as in every release build.
        "CARGO_PROFILE_RELEASE_OPT_LEVEL": "0",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }
    (work / "home").mkdir()
    if args.bin:
        (install_root / "bin").mkdir(parents=True)
        os.symlink(Path(args.bin).resolve(), install_root / "bin" / "leadrelay")
    leadrelay = str(install_root / "bin" / "leadrelay") if args.bin else None
    selected = {str(ROOT / p) for p in args.page} if args.page else None

    counts = {"sh": 0, "sh,norun": 0, "toml": 0, "toml,norun": 0, "help": 0}
    for p in all_pages:
        if not p.exists():
            continue
        rel = str(p.relative_to(ROOT))
        run_it = (selected is None or str(p) in selected or rel in CLONE_PAGES) and not (
            args.bin and rel in CLONE_PAGES
        )
        if not run_it:
            continue
        text = p.read_text()
        script = []
        for info, body, line in blocks(text):
            kind = info.replace(" ", "")
            if kind in ("sh", "bash"):
                script.append(f"# {rel}:{line}\n{body}")
                counts["sh"] += 1
            elif kind in ("sh,norun", "bash,norun"):
                out = subprocess.run(["bash", "-n"], input=body, text=True, capture_output=True)
                if out.returncode != 0:
                    errors.append(f"{rel}:{line}: shell snippet does not parse: {out.stderr}")
                counts["sh,norun"] += 1
        if script:
            if rel in CLONE_PAGES:
                cwd = work / ("clone-" + p.stem)
                subprocess.run(["git", "clone", "-q", str(ROOT), str(cwd)], check=True)
                # The working tree as it is now (what is being checked), not
                # only what is committed: tracked and new files, no build output.
                files = subprocess.run(
                    ["git", "ls-files", "-z", "-co", "--exclude-standard"],
                    cwd=ROOT, capture_output=True, check=True,
                ).stdout
                subprocess.run(
                    ["tar", "-C", str(ROOT), "--null", "-T", "-", "-cf", str(work / "tree.tar")],
                    input=files, check=True,
                )
                subprocess.run(["tar", "-C", str(cwd), "-xf", str(work / "tree.tar")], check=True)
                timeout = 3600
            else:
                cwd = work / ("page-" + re.sub(r"\W", "-", rel))
                cwd.mkdir()
                timeout = 300
            print(f"--> {rel}: {len(script)} shell snippets", flush=True)
            errors += run_page(rel, "\n".join(script), clean_env, cwd, timeout)
        if leadrelay is None and (install_root / "bin" / "leadrelay").exists():
            leadrelay = str(install_root / "bin" / "leadrelay")
    if leadrelay is None:
        errors.append("the walk did not install leadrelay (README.md's quickstart)")
        return report(errors, counts)

    for p in all_pages:
        if not p.exists():
            continue
        rel = str(p.relative_to(ROOT))
        for info, body, line in blocks(p.read_text()):
            kind = info.replace(" ", "")
            if kind == "toml":
                counts["toml"] += 1
                tdir = tempfile.mkdtemp(dir=work)
                errors += check_toml(rel, body, line, leadrelay, tdir)
            elif kind == "toml,norun":
                counts["toml,norun"] += 1
                try:
                    tomllib.loads(body)
                except tomllib.TOMLDecodeError as e:
                    errors.append(f"{rel}:{line}: TOML snippet does not parse: {e}")
        counts["help"] += sum(1 for line in p.read_text().split("\n") if HELP.match(line))
    errors += check_help(all_pages, leadrelay, args.update)
    shutil.rmtree(work, ignore_errors=True)
    return report(errors, counts)


def report(errors, counts):
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    print(f"docs: {summary}; {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
