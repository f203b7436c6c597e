"""config.py on the lab files people get wrong: empty values, a file that is not UTF-8, YAML
merge keys, two entries for one phone. Each is one line naming file:line:column, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devicelab import config
from devicelab.errors import ConfigError

PIXEL = "    platform: android\n    model: Pixel 6\n    os: Android 13\n"


def write(tmp_path: Path, text: str | bytes, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(load: object, path: Path) -> ConfigError:
    assert callable(load)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # `serial:` left for later: the loader died on the empty value (a traceback, exit 1).
        (f"devices:\n  pixel:\n{PIXEL}    serial:   # REPLACE-WITH the serial\n", ":6:5: "),
        ("devices:\n", ":1:9: devices: expected a valid dictionary, found an empty value"),
        (b"devices:\n  pixel:\n    platform: android\n    model: Pixel \xe9\n", ":4:18: not UTF-8"),
        ("base: &b 3\ndevices:\n  a:\n    <<: *b\n", ":1:7: `<<` merges a mapping"),
    ],
    ids=["empty-serial", "empty-devices", "latin-1", "merge-of-a-number"],
)
def test_the_cli_says_one_line_and_exits_2(tmp_path: Path, text: str | bytes, said: str) -> None:
    path = write(tmp_path, text)
    done = subprocess.run(
        [sys.executable, "-m", "devicelab", "devices", "--inventory", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"devicelab: error: {path}{said}"), line


def test_an_empty_value_is_null_named_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"devices:\n  pixel:\n{PIXEL}    serial:   # later\n")
    err = refused(config.load_inventory, path)
    assert (err.location, err.field) == (f"{path}:6:5", "devices.pixel.serial")
    assert "an android device needs serial" in str(err)
    path = write(tmp_path, "devices:\n  w:\n    platform: web\n    model:\n    os: D\n")
    err = refused(config.load_inventory, path)
    assert err.field == "devices.w.model" and err.location == f"{path}:4:11"
    assert "found an empty value" in str(err)
    # Null where null is allowed stays allowed, written any way.
    for null in ("", "~", "null"):
        path = write(tmp_path, f"devices:\n  p:\n{PIXEL}    serial: S\n    soc: {null}\n")
        assert config.load_inventory(path).devices["p"].soc is None
    path = write(tmp_path, "profiles:\n  x:\n", "networks.yaml")
    assert refused(config.load_networks, path).location == f"{path}:2:5"
    path = write(tmp_path, "targets:\n  -\n", "targets.yaml")
    assert refused(config.load_targets, path).field == "targets[0]"


def test_a_file_that_is_not_utf8_names_the_first_byte(tmp_path: Path) -> None:
    latin1 = "devices:\n  p:\n    model: Pixel é\n".encode("latin-1")
    for load, name in [
        (config.load_inventory, "inventory.yaml"),
        (config.load_networks, "networks.yaml"),
        (config.load_targets, "targets.yaml"),
    ]:
        err = refused(load, write(tmp_path, latin1, name))
        assert err.location == f"{tmp_path / name}:3:18"
        assert "not UTF-8 (byte 0xe9)" in str(err) and err.hint == "save the file as UTF-8"
    utf16 = "devices: {}\n".encode("utf-16")
    assert "not UTF-8" in str(refused(config.load_inventory, write(tmp_path, utf16)))
    # A byte-order mark is UTF-8 still; a control character is named by line, not offset.
    bom = b"\xef\xbb\xbfdevices:\n  w: {platform: web, model: C, os: D}\n"
    assert config.load_inventory(write(tmp_path, bom)).ids() == ["w"]
    path = write(tmp_path, 'devices:\n  w: {platform: web, model: "C\x01", os: D}\n')
    assert "character #x0001 is not allowed" in str(refused(config.load_inventory, path))
    assert refused(config.load_inventory, path).location == f"{path}:2:31"


def test_merge_keys_bring_a_template_in(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "templates:\n"
        "  android: &android\n"
        "    platform: android\n"
        "    os: Android 13\n"
        "    tags: [lab]\n"
        "  hub: &hub {power: {kind: uhubctl, hub: '1-1'}, tags: [hub]}\n"
        "devices:\n"
        "  pixel:\n"
        "    <<: *android\n"
        "    model: Pixel 6\n"
        "    serial: A\n"
        "    tags: [own]\n"
        "  pixel7:\n"
        "    model: Pixel 7\n"
        "    <<: [*android, *hub]\n"
        "    serial: B\n"
        "    power: {kind: uhubctl, hub: '1-1', port: 3}\n"
        "  copy: &copy\n"
        "    <<: *android\n"
        "    model: M\n"
        "    serial: C\n"
        "  copy2:\n"
        "    <<: *copy\n"
        "    serial: D\n",
    )
    inventory = config.load_inventory(path)
    assert inventory.ids() == ["pixel", "pixel7", "copy", "copy2"]
    pixel, pixel7, copy2 = (inventory.devices[k] for k in ("pixel", "pixel7", "copy2"))
    assert (pixel.platform, pixel.os, pixel.tags) == ("android", "Android 13", ["own"])
    # The first of a list of merges wins; the entry's own keys win over every merge.
    assert pixel7.tags == ["lab"] and pixel7.power.port == 3
    assert (copy2.model, copy2.serial, copy2.os) == ("M", "D", "Android 13")
    # An error in a merged field names the device; the line is the `<<` that brought it in
    # (a missing or unknown field) or the template's value (a wrong one).
    bad = write(tmp_path, "t: &t {platform: android, os: A, ram_gb: lots}\ndevices:\n  p:\n"
                "    <<: *t\n    model: M\n    serial: S\n")  # fmt: skip
    err = refused(config.load_inventory, bad)
    assert (err.field, err.location) == ("devices.p.ram_gb", f"{bad}:1:42")
    bad = write(tmp_path, "templates:\n  t: &t {platform: android, os: A, modle: M}\ndevices:\n"
                "  p:\n    serial: S\n    <<: *t\n")  # fmt: skip
    err = refused(config.load_inventory, bad)
    assert (err.field, err.location) == ("devices.p.modle", f"{bad}:6:5")
    assert "did you mean 'model'" in str(err)


def test_merge_keys_in_the_profiles_and_targets(tmp_path: Path) -> None:
    networks = write(
        tmp_path,
        "profiles:\n  a: &a {label: A, source: me, rtt_ms: 100, down_kbps: 1000, up_kbps: 500}\n"
        "  b:\n    <<: *a\n    label: B\n",
        "networks.yaml",
    )
    catalog = config.load_networks(networks)
    assert (catalog.profiles["b"].label, catalog.profiles["b"].rtt) == ("B", 100)
    targets = write(
        tmp_path,
        "targets:\n  - &row {check: reconnect, source: s, value: 1, unit: ms}\n"
        "  - {<<: *row, check: memory_leak}\n",
        "targets.yaml",
    )
    book = config.load_targets(targets)
    assert [(t.check, t.value) for t in book.targets] == [("reconnect", 1), ("memory_leak", 1)]


@pytest.mark.parametrize(
    ("text", "said", "where"),
    [
        (
            "devices:\n  a: &a\n    platform: web\n    <<: *a\n",
            "merges the mapping it is in",
            "4:5",
        ),
        ("devices: &d\n  a: *d\n", "an alias (*name) inside what it names", "1:10"),
        ("l: &l [1]\ndevices:\n  a:\n    <<: *l\n", "found '1'", "1:8"),
        ("devices:\n  a:\n    <<: [{platform: web}, [1]]\n", "found a list", "3:27"),
        ("devices:\n  ? [a, b]\n  : 1\n", "a key must be a plain name", "2:5"),
        ("devices:\n  a:\n    os: 2019-02-30\n", "cannot read '2019-02-30'", "3:9"),
        ("devices:\n  a:\n    os: !unknown x\n", "cannot read 'x'", "3:9"),
    ],
)
def test_yaml_the_models_cannot_take_is_refused_at_its_line(
    tmp_path: Path, text: str, said: str, where: str
) -> None:
    path = write(tmp_path, text)
    err = refused(config.load_inventory, path)
    assert said in str(err) and err.location == f"{path}:{where}"


def phone(key: str, platform: str, ident: str, port: int | None = None, line: str = "") -> str:
    field = "serial" if platform == "android" else "udid"
    power = f"    power: {{kind: uhubctl, hub: '1-1', port: {port}}}\n" if port else line
    head = f"  {key}:\n    platform: {platform}\n    model: M\n    os: O\n"
    return f"{head}    {field}: {ident}\n{power}"


@pytest.mark.parametrize(
    ("second", "said"),
    [
        (phone("b", "android", "ABC"), ("a", "b", "serial 'ABC'")),
        (phone("c", "ios", "00008030-001a"), ("i", "c", "udid '00008030-001a'")),
        (phone("c", "android", "S", port=2), ("a", "c", "hub 1-1 port 2")),
    ],
    ids=["android-serial", "ios-udid-any-case-and-dash", "hub-port"],
)
def test_two_entries_for_one_phone_load_and_are_found_as_one(
    tmp_path: Path, second: str, said: tuple[str, str, str]
) -> None:
    # Variants of one phone (another build, another proxy) are allowed; a farm asks
    # same_phone() so that it never runs two of them at once.
    first = phone("a", "android", "ABC", port=2) + phone("i", "ios", "00008030001A")
    inventory = config.load_inventory(write(tmp_path, "devices:\n" + first + second))
    assert inventory.same_phone(inventory.ids()) == said
    assert inventory.same_phone([said[0]]) is None


def test_what_is_not_one_phone_stays_allowed(tmp_path: Path) -> None:
    # Web devices have no serial; an android serial equal to an iPhone's udid is no clash;
    # hub ports differ by hub or by port; manual power names no port.
    web = "  w{n}:\n    platform: web\n    model: C\n    os: D\n"
    path = write(
        tmp_path,
        "devices:\n" + web.format(n=1) + web.format(n=2)
        + phone("a", "android", "X", port=2) + phone("i", "ios", "X")
        + phone("b", "android", "Y", line="    power: {kind: uhubctl, hub: '1-2', port: 2}\n")
        + phone("c", "android", "Z", line="    power: {kind: manual}\n")
        + phone("d", "android", "W", line="    power: {kind: manual}\n"),
    )  # fmt: skip
    inventory = config.load_inventory(path)
    assert len(inventory.ids()) == 7 and inventory.same_phone(inventory.ids()) is None


def test_proxies_listening_on_one_address_are_found(tmp_path: Path) -> None:
    # Same port on the same address, or on every address, clashes; another port or
    # another address of the machine does not.
    def iphone(key: str, listen: str) -> str:
        return (
            phone(key, "ios", f"0000{key}")
            + f"    proxy: {{listen: '{listen}', allow: [10.0.0.0/24]}}\n"
        )

    path = write(
        tmp_path,
        "devices:\n" + iphone("a", "10.0.0.2:8899") + iphone("b", "10.0.0.3:8899")
        + iphone("c", "10.0.0.2:8900") + iphone("d", "0.0.0.0:8900")
        + iphone("e", "10.0.0.3:8899"),
    )  # fmt: skip
    inventory = config.load_inventory(path)
    assert inventory.shared_proxy(["a", "b", "c"]) is None
    assert inventory.shared_proxy(["a", "c", "d"]) == ("c", "d", "0.0.0.0:8900")
    assert inventory.shared_proxy(["a", "b", "e"]) == ("b", "e", "10.0.0.3:8899")


def test_an_id_that_is_not_its_key_is_named_at_the_id_line(tmp_path: Path) -> None:
    # It was reported at file:1:1 (document).
    path = write(tmp_path, f"devices:\n  pixel:\n    id: pixel6\n{PIXEL}    serial: S\n")
    err = refused(config.load_inventory, path)
    assert (err.location, err.field) == (f"{path}:3:5", "devices.pixel.id")
    assert "device 'pixel' has id 'pixel6'" in str(err)


def test_the_devices_table_keeps_long_ids_apart_from_their_platform(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Fixed 18-character columns printed "chromium-desktop-1080pweb" for an id of 22.
    from devicelab.cli.devices import _print_table
    from devicelab.models import Device
    from devicelab.platforms.state import DeviceState

    long_id = Device(id="chromium-desktop-1080p", platform="web", model="Chromium", os="Linux")
    short = Device(id="web", platform="web", model="Chromium 156 with a long model", os="-")
    _print_table([DeviceState(long_id, "ready", ""), DeviceState(short, "ready", "")])
    header, first, second = capsys.readouterr().out.splitlines()
    assert first.split() == ["chromium-desktop-1080p", "web", "Chromium", "Linux", "ready"]
    assert header.index("PLATFORM") == first.index("web  ") == second.index("web  ", 3)
    assert header.index("STATE") == first.index("ready") == second.index("ready")


@pytest.mark.parametrize(
    ("url", "said", "hint"),
    [
        # Taken as it was, the session failed later in the WebDriver client's own words.
        ("127.0.0.1:4723", "'127.0.0.1:4723' has no scheme", "write it as http://127.0.0.1:4723"),
        ("localhost:4723", "'localhost:4723' has no scheme", "write it as http://localhost:4723"),
        ("ftp://127.0.0.1:4723", "is not an http:// or https:// URL", "http://127.0.0.1:4723"),
        ("http://:4723", "is not an http:// or https:// URL with a host", "http://127.0.0.1"),
        ("http://127.0.0.1:99999", "has no valid port", "http://127.0.0.1:4723"),
        ("grid:S3cret@hub.example:443", "'***@hub.example:443' has no scheme", "http://***@"),
    ],
)
def test_an_appium_url_without_an_http_scheme_and_host_is_refused_at_its_line(
    tmp_path: Path, url: str, said: str, hint: str
) -> None:
    path = write(tmp_path, f"devices:\n  p:\n{PIXEL}    serial: X\n    appium:\n      url: {url}\n")
    error = refused(config.load_inventory, path)
    assert str(error).startswith(f"{path}:8:7: devices.p.appium.url: "), str(error)
    assert said in str(error) and hint in error.hint
    assert "S3cret" not in f"{error} {error.hint}"


@pytest.mark.parametrize("url", ["http://127.0.0.1:4723", "https://u:k@hub.example/wd/hub"])
def test_an_http_or_https_appium_url_loads(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f"devices:\n  p:\n{PIXEL}    serial: X\n    appium:\n      url: {url}\n")
    device = config.load_inventory(path).devices["p"]
    assert device.appium is not None and device.appium.url == url
