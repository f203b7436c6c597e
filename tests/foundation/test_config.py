"""config.py: the lab files load, and every mistake names file:line:column and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicelab import config
from devicelab.errors import ConfigError, UnknownId

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_files_load() -> None:
    inventory = config.load_inventory(ROOT / "inventory.yaml")
    assert {"web", "android-lowend", "android-midrange", "iphone11", "iphone14"} <= set(
        inventory.ids()
    )
    assert inventory.devices["android-lowend"].soc == "Snapdragon 665"
    assert inventory.devices["android-midrange"].ram_gb == 6
    assert inventory.devices["iphone11"].soc == "A13 Bionic"
    networks = config.load_networks(ROOT / "profiles/networks.yaml")
    assert {"slow-3g", "fast-3g", "4g", "5g", "wifi", "none", "offline"} <= set(networks.ids())
    assert len(config.load_targets(ROOT / "profiles/targets.yaml").targets) > 40


def test_unknown_key_names_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "devices:\n  web:\n    platform: web\n    model: Chromium\n    os: Debian\n"
        "    colour: blue\n",
    )
    with pytest.raises(ConfigError) as err:
        config.load_inventory(path)
    assert err.value.location == f"{path}:6:5"
    assert err.value.field == "devices.web.colour"
    assert "unknown field 'colour'" in str(err.value)
    assert err.value.exit_code == 2


def test_wrong_type_points_at_the_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "devices:\n  a:\n    platform: android\n    model: X\n    os: Android 11\n"
        "    serial: abc\n    ram_gb: lots\n",
    )
    with pytest.raises(ConfigError) as err:
        config.load_inventory(path)
    assert err.value.location == f"{path}:7:13"
    assert err.value.field == "devices.a.ram_gb"
    assert "expected a valid number" in str(err.value) and "'lots'" in str(err.value)


def test_wrong_literal_and_list_index(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets:\n  - {check: a, source: s, value: 1}\n  - check: b\n    source: s\n"
        "    column: 5g\n",
        "targets.yaml",
    )
    with pytest.raises(ConfigError) as err:
        config.load_targets(path)
    assert err.value.field == "targets[1].column"
    assert err.value.location == f"{path}:5:13"
    assert "'5g'" in str(err.value)


def test_a_story_column_that_is_none_of_the_story_s_is_refused(tmp_path: Path) -> None:
    # "4G" was taken as a column of its own: every check of the run was judged nowhere,
    # all skips, exit 0.
    path = write(
        tmp_path,
        "profiles:\n  my-lte:\n    label: L\n    source: me\n    rtt_ms: 60\n"
        "    story_column: 4G\n",
        "networks.yaml",
    )
    with pytest.raises(ConfigError) as err:
        config.load_networks(path)
    assert err.value.field == "profiles.my-lte.story_column"
    assert err.value.location == f"{path}:6:19"
    assert "'4g'" in str(err.value) and "'4G'" in str(err.value)


def test_missing_field_and_cross_field_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "devices:\n  a:\n    platform: android\n    os: Android 11\n")
    with pytest.raises(ConfigError) as err:
        config.load_inventory(path)
    assert "missing required field 'model'" in str(err.value)
    assert err.value.field == "devices.a.model"
    path = write(
        tmp_path,
        "profiles:\n  x:\n    label: X\n    source: me\n    down_delay_ms: 10\n",
        "networks.yaml",
    )
    with pytest.raises(ConfigError, match="give both down_delay_ms and up_delay_ms"):
        config.load_networks(path)


def test_bad_yaml_and_duplicate_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"inventory.yaml:3:1: not valid YAML"):
        config.load_inventory(write(tmp_path, "devices:\n  a: [1,\n"))
    path = write(tmp_path, "devices:\n  a: {}\n  a: {}\n")
    with pytest.raises(ConfigError, match=r"inventory.yaml:3:3: duplicate key 'a'"):
        config.load_inventory(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load_inventory(tmp_path / "nope.yaml")


def test_a_devicelab_home_that_is_not_there_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A typo fell back to ./inventory.yaml or the shipped files, silently.
    monkeypatch.setenv("DEVICELAB_HOME", str(tmp_path / "lab-typo"))
    with pytest.raises(ConfigError, match="lab-typo: no such folder"):
        config.find_file("inventory.yaml")
    monkeypatch.setenv("DEVICELAB_HOME", str(tmp_path))  # there, without the file: next one
    assert config.find_file("inventory.yaml").name == "inventory.yaml"


def test_unknown_ids_suggest_the_closest() -> None:
    networks = config.load_networks(ROOT / "profiles/networks.yaml")
    with pytest.raises(UnknownId) as err:
        config.network_profile("4G", networks)
    assert err.value.suggestion == "4g"
    assert "did you mean '4g'" in str(err.value)
    with pytest.raises(UnknownId) as err:
        config.network_profile("slow3g", networks)
    assert err.value.suggestion == "slow-3g"
    for shouted, meant in [("WIFI", "wifi"), ("NONE", "none"), ("FAST-3G", "fast-3g")]:
        with pytest.raises(UnknownId) as err:
            config.network_profile(shouted, networks)
        assert err.value.suggestion == meant, shouted
    inventory = config.load_inventory(ROOT / "inventory.yaml")
    with pytest.raises(UnknownId) as err:
        config.device("iphone-11", inventory)
    assert err.value.suggestion == "iphone11"
    assert err.value.exit_code == 2


def test_unknown_key_suggests_the_field_meant(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "devices:\n  a:\n    platform: android\n    model: X\n    os: A\n    serial: s\n"
        "    power: {kind: uhubctl, hub: x, prot: 2}\n",
    )
    with pytest.raises(ConfigError, match="unknown field 'prot'; did you mean 'port'") as err:
        config.load_inventory(path)
    assert err.value.field == "devices.a.power.prot"
    assert err.value.location == f"{path}:7:36"


def test_a_misspelled_required_field_is_named_as_the_typo_it_is(tmp_path: Path) -> None:
    # Reported as "missing required field 'model'" at the device's line, without a word
    # about the misspelled key two lines below.
    path = write(tmp_path, "devices:\n  web:\n    platform: web\n    modle: Chromium\n    os: D\n")
    with pytest.raises(ConfigError, match="unknown field 'modle'; did you mean 'model'") as err:
        config.load_inventory(path)
    assert err.value.location == f"{path}:4:5"


def test_a_wheel_carries_the_lab_files_and_finds_them_without_a_checkout(
    tmp_path: Path,
) -> None:
    """A user who pip-installs devicelab has no checkout: the profiles and the sample
    inventory come in the package (devicelab/data), and the lookup falls back to them."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "inventory.yaml", "profiles", "devicelab",
                 "backend_checks"):  # fmt: skip
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "node_modules")
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("devicelab-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for name in ("inventory.yaml", "profiles/networks.yaml", "profiles/targets.yaml"):
        shipped = site / "devicelab" / "data" / name
        assert not shipped.is_symlink() and shipped.read_bytes() == (ROOT / name).read_bytes()
    # Installed like that, away from any checkout: the files are found in the package.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "from devicelab import config; "
        "print(config.network_profile('4g').rtt, len(config.load_targets().targets), "
        "'web' in config.load_inventory().ids(), config.__file__)"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    rtt, rows, has_web, where = ran.stdout.split()
    assert (rtt, has_web) == ("170.0", "True") and int(rows) > 50
    assert where.startswith(str(site))
