"""Security: names that try to leave their folder, per-user isolation, sandboxed templates, keys, defaults."""
from __future__ import annotations

import hmac
import threading
from pathlib import Path

import pytest

from modules.core.config import LoaderOptions, ServerOptions
from modules.core.errors import CorralError
from modules.core.extensions import ExtensionManager
from modules.core.presets import PresetLibrary
from modules.core.sampling import SamplerParams
from modules.core.store import NotFoundError, Store
from modules.core.templates import FormatLibrary, format_from_model, render

HOSTILE_NAMES = [
    "../escape", "../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/passwd", "/tmp/x", "C:\\Windows\\x",
    "a\x00b", "nul\x00.yaml", "x" * 5000, "..", ".", ".hidden", "sub/dir", "ＡＢ／..／..", "%2e%2e%2fx",
    "\u202eevil", "line\nbreak", "tab\tname", "", "   ", "~/x", "..;/x", "a/../../b", "\\\\server\\share",
]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def must_refuse(name: str) -> bool:
    """Names no folder or key may take: separators, NUL and other control characters, dot names, too long."""
    return (any(sep in name for sep in ("/", "\\")) or any(ord(c) < 32 for c in name)
            or name.strip() in ("", ".", "..") or len(name) > 200)


def stays_inside(root: Path, folder: Path, name: str, *actions) -> None:
    """Each action refuses ``name`` with a CorralError, or touches nothing but ``folder``'s own files.

    A name with a path separator or ``..`` as a part must always be refused; exotic but plain
    names (full-width letters, a leading '~') may be used, inside the folder.
    """
    outside = files_under(root) - files_under(folder)
    for action in actions:
        try:
            action()
        except CorralError:
            continue
        assert not must_refuse(name), f"{name!r} was accepted"
    assert files_under(root) - files_under(folder) == outside
    assert all(p.parent == folder for p in files_under(folder))


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A folder tree with a secret next to the data folders: nothing may reach it."""
    (tmp_path / "secret.yaml").write_text("temperature: 0.1\n")
    for name in ("presets", "formats", "extensions"):
        (tmp_path / "data" / name).mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_preset_names_never_leave_the_folder(sandbox: Path, name: str):
    library = PresetLibrary(sandbox / "data" / "presets")
    stays_inside(sandbox, sandbox / "data" / "presets", name, lambda: library.load(name),
                 lambda: library.save(name, SamplerParams()), lambda: library.delete(name))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_format_names_never_leave_the_folder(sandbox: Path, name: str):
    library = FormatLibrary(sandbox / "data" / "formats")
    stays_inside(sandbox, sandbox / "data" / "formats", name, lambda: library.get(name),
                 lambda: library.save(name, "{{ messages }}", []), lambda: library.delete(name))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_extension_names_never_import_outside_the_folder(sandbox: Path, name: str):
    (sandbox / "script.py").write_text("raise SystemExit('imported from outside')\n")
    manager = ExtensionManager(sandbox / "data" / "extensions")
    assert name not in manager.enable(_FakeCtx(), [name])


class _FakeCtx:
    class config:  # noqa: N801 - shaped like AppConfig where extensions read it
        settings: dict = {}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_character_and_chat_names_in_the_store(tmp_path: Path, name: str):
    with Store(tmp_path / "c.db") as store:
        for action in (lambda: store.save_character("alice", name, "hi", "ctx", None),
                       lambda: store.create_chat(name, "a chat")):  # user names key each user's data
            try:
                action()
            except CorralError:
                continue
            assert not must_refuse(name), f"{name!r} was accepted"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_download_targets_stay_in_models(name: str):
    from modules.core.download import check_file_name, parse_repo_id

    try:
        repo, _ = parse_repo_id(f"owner/{name}")
    except CorralError:
        pass
    else:  # an accepted id is one plain folder name under models/
        assert ".." not in repo and repo.count("/") == 1 and not must_refuse(repo.split("/")[1])
    try:
        check_file_name(name)
    except CorralError:
        return
    parts = name.strip().split("/")
    assert not name.strip().startswith("/") and "\\" not in name and ".." not in parts and "" not in parts


def test_another_users_chat_is_invisible_by_guessed_id(tmp_path: Path):
    """Every store path a UI event or an import takes, with a guessed id from another user."""
    with Store(tmp_path / "c.db") as store:
        chat = store.create_chat("alice", "private")
        message = store.add_message("alice", chat, "user", "my secret")
        for attempt in (lambda: store.get_chat("bob", chat), lambda: store.rename_chat("bob", chat, "mine"),
                        lambda: store.delete_chat("bob", chat), lambda: store.export_chat_json("bob", chat),
                        lambda: store.export_chat_markdown("bob", chat),
                        lambda: store.update_message("bob", message, content="changed"),
                        lambda: store.add_message("bob", chat, "user", "intrusion")):
            with pytest.raises(NotFoundError):
                attempt()
        assert [m["content"] for m in store.get_chat("alice", chat)["messages"]] == ["my secret"]
        assert store.list_chats("bob") == []


def test_ui_events_scope_by_the_signed_in_user():
    from types import SimpleNamespace

    from modules.ui.auth import user_of

    assert user_of(SimpleNamespace(username="bob")) == "bob"
    assert user_of(None) == user_of(SimpleNamespace(username=None)) == "local"


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os }}",
    "{% for i in range(10**9) %}x{% endfor %}",
])
def test_model_chat_templates_render_in_a_sandbox(source: str):
    fmt = format_from_model(source, "</s>")
    with pytest.raises(CorralError):
        render(fmt, [{"role": "user", "content": "Hi"}], bos_token="<s>", eos_token="</s>")


def test_api_keys_are_compared_in_constant_time(monkeypatch):
    import asyncio

    from modules.api.auth import KeyCheck
    from modules.api.errors import ApiError

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    keys = KeyCheck(ServerOptions(api_key="user-key", admin_key="admin-key"))
    request = type("R", (), {"headers": {"authorization": "Bearer user-key"}})()
    asyncio.run(keys.user(request))
    with pytest.raises(ApiError) as refused:
        asyncio.run(keys.admin(request))  # a user key never opens load / unload
    assert refused.value.status == 401
    assert (b"user-key", b"user-key") in calls and (b"user-key", b"admin-key") in calls


def test_safe_defaults(repo_root: Path):
    import app

    config = app.build_config(app.parse_args(["--user-data-dir", str(repo_root / "no-such-folder")]), repo_root)
    assert config.server.host == "127.0.0.1" and not config.server.listen
    assert config.loader.trust_remote_code is False and LoaderOptions().trust_remote_code is False
    assert app.build_config(app.parse_args(["--listen"]), repo_root).server.host == "0.0.0.0"


def test_trust_remote_code_reaches_transformers_only_when_asked(monkeypatch, tmp_path: Path):
    """The loader hands trust_remote_code=False to both from_pretrained calls unless the option is on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modules.core.loaders.transformers_loader import TransformersLoader
    from modules.core.registry import describe_folder
    from tiny_models import build_tiny_llama

    seen: list[bool] = []
    for cls in (AutoTokenizer, AutoModelForCausalLM):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _real(klass, *args, **kwargs)
        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    info = describe_folder(build_tiny_llama(tmp_path / "tiny"))
    TransformersLoader().load(info, LoaderOptions(cpu=True, dtype="float32"), lambda *_: None)
    assert seen == [False, False]


def test_threads_do_not_share_a_users_view(tmp_path: Path):
    """Two users writing at once each see only their own chats."""
    with Store(tmp_path / "c.db") as store:
        def write(user: str) -> None:
            for n in range(20):
                store.create_chat(user, f"{user} {n}")
        threads = [threading.Thread(target=write, args=(u,)) for u in ("alice", "bob")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(c["title"].startswith("alice") for c in store.list_chats("alice"))
        assert len(store.list_chats("bob")) == 20
