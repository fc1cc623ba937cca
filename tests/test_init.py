"""The public API matches the reference: names, module paths, signatures, defaults, docstrings."""

import inspect
import typing
import unittest

from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

import elefast
import elefast._engines.options
import elefast._engines.urls
import elefast.asyncio
import elefast.errors
import elefast.sync
from elefast.extras import alembic as alembic_extra

# name -> (parameters in order with defaults; inspect.Parameter.empty for required)
E = inspect.Parameter.empty
REFERENCE = {
    elefast.Database: [("engine", E), ("server", E), ("sessionmaker_factory", "sessionmaker")],
    elefast.AsyncDatabase: [("engine", E), ("server", E), ("sessionmaker_factory", "async_sessionmaker")],
    elefast.DatabaseServer: [("engine", E), ("schema", None), ("debug", False)],
    elefast.AsyncDatabaseServer: [("engine", E), ("schema", None)],
    elefast.MetadataMigrator: [("metadata", E)],
    elefast.AsyncMetadataMigrator: [("metadata", E)],
    alembic_extra.AlembicMigrator: [("config_path", E)],
}
METHODS = {
    "create_database": [("prefix", "elefast"), ("encoding", "utf8")],
    "drop_database": [("name", E)],
    "ensure_is_ready": [("timeout", 30), ("interval", 0.5)],
}


def positional(signature):
    return [p for p in signature.parameters.values()
            if p.name != "self" and p.kind is not inspect.Parameter.KEYWORD_ONLY]


class PublicAPITests(unittest.TestCase):
    def test_all_is_sorted_and_complete(self):
        """elefast.__all__ is sorted and every name in it exists."""
        self.assertEqual(elefast.__all__, sorted(elefast.__all__))
        for name in elefast.__all__:
            self.assertTrue(hasattr(elefast, name), name)

    def test_alembic_migrator_from_the_top_level(self):
        """``from elefast import AlembicMigrator`` (as the README shows) works; without Alembic the
        error says what to install."""
        from elefast import AlembicMigrator

        self.assertIs(AlembicMigrator, alembic_extra.AlembicMigrator)
        import subprocess
        import sys

        code = ("import sys; sys.modules['alembic'] = None\n"
                "try:\n    from elefast import AlembicMigrator\n"
                "except ImportError as error:\n    print(error)\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertIn("pip install 'elefast[alembic]'", result.stdout, result.stderr)

    def test_upstream_module_paths(self):
        """elefast.sync, elefast.asyncio and elefast.errors hold upstream's names."""
        for module, names in [
            (elefast.sync, ["Database", "DatabaseServer", "Migrator", "MetadataMigrator"]),
            (elefast.asyncio, ["AsyncDatabase", "AsyncDatabaseServer", "AsyncMigrator",
                               "AsyncMetadataMigrator"]),
            (elefast.errors, ["ElefastError", "DatabaseNotReadyError"]),
        ]:
            for name in names:
                self.assertIs(getattr(module, name), getattr(elefast, name, getattr(module, name)))

    def test_constructor_signatures(self):
        """Constructors take the reference's parameters, in order, with its defaults."""
        for cls, expected in REFERENCE.items():
            with self.subTest(cls=cls.__name__):
                params = positional(inspect.signature(cls.__init__))
                got = []
                for p in params:
                    default = p.default
                    if default is not E and callable(default):
                        default = default.__name__
                    got.append((p.name, default))
                self.assertEqual(got, expected)

    def test_server_method_signatures(self):
        """create_database, drop_database and ensure_is_ready match the reference (sync and async)."""
        for cls in (elefast.DatabaseServer, elefast.AsyncDatabaseServer):
            for method, expected in METHODS.items():
                with self.subTest(cls=cls.__name__, method=method):
                    params = positional(inspect.signature(getattr(cls, method)))
                    self.assertEqual([(p.name, p.default) for p in params], expected)
            self.assertIsInstance(inspect.getattr_static(cls, "url"), property)
        for cls in (elefast.AsyncDatabaseServer, elefast.AsyncDatabase):
            for name in ("create_database", "drop_database", "ensure_is_ready", "drop"):
                if hasattr(cls, name):
                    self.assertTrue(inspect.iscoroutinefunction(getattr(cls, name)), name)

    def test_type_aliases(self):
        """CanBeTurnedIntoEngine is Engine | URL | str; the async alias uses AsyncEngine."""
        self.assertEqual(set(typing.get_args(elefast.CanBeTurnedIntoEngine)), {Engine, URL, str})
        self.assertEqual(set(typing.get_args(elefast.CanBeTurnedIntoAsyncEngine)), {AsyncEngine, URL, str})

    def test_every_public_name_has_a_docstring(self):
        """Every public class, function and method carries a docstring (they feed the docs)."""
        modules = [elefast, elefast.sync, elefast.asyncio, elefast.errors, alembic_extra]
        for module in modules:
            self.assertTrue(module.__doc__, module.__name__)
            for name in getattr(module, "__all__", []):
                obj = getattr(module, name)
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    self.assertTrue(inspect.getdoc(obj), f"{module.__name__}.{name}")
                    for attr, member in vars(obj).items() if inspect.isclass(obj) else []:
                        documented = inspect.isfunction(member) or isinstance(member, property)
                        if not attr.startswith("_") and documented:
                            self.assertTrue(inspect.getdoc(member), f"{name}.{attr}")

    def test_error_tree(self):
        """Every elefast error derives from ElefastError; bad input is also a ValueError."""
        for name in elefast.errors.__all__:
            self.assertTrue(issubclass(getattr(elefast.errors, name), elefast.ElefastError), name)
        self.assertTrue(issubclass(elefast.errors.ConfigurationError, ValueError))
        self.assertEqual(elefast.errors.ElefastError.__module__, "elefast.errors")

    def test_every_error_lives_in_errors_and_pickles(self):
        """Each error class is defined in elefast.errors and survives pickling (xdist, stestr send them)."""
        import pickle

        import elefast.provision.binaries
        import elefast.provision.docker
        import elefast.provision.local

        for name in elefast.errors.__all__:
            cls = getattr(elefast.errors, name)
            with self.subTest(name):
                self.assertEqual(cls.__module__, "elefast.errors")
                copy = pickle.loads(pickle.dumps(cls(f"{name} message")))
                self.assertIs(type(copy), cls)
                self.assertEqual(str(copy), f"{name} message")
        defined_elsewhere = []
        for module in (elefast, elefast.sync, elefast.asyncio, elefast.provision.local, elefast.provision.binaries,
                       elefast.provision.docker, elefast._engines.urls, elefast._engines.options):
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, elefast.ElefastError)
                        and value is not getattr(elefast.errors, value.__name__, None)):
                    defined_elsewhere.append(f"{module.__name__}.{value.__name__}")
        self.assertEqual(defined_elsewhere, [])

    def test_py_typed_ships(self):
        """The package is marked typed (PEP 561)."""
        import pathlib

        self.assertTrue((pathlib.Path(elefast.__file__).parent / "py.typed").is_file())

    def test_no_module_over_400_lines(self):
        """Small modules (the layout rule of DESIGN.md): none of the package's is over 400 lines."""
        import pathlib

        package = pathlib.Path(elefast.__file__).parent
        long = {str(path.relative_to(package)): n for path in package.rglob("*.py")
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
        self.assertEqual(long, {})


if __name__ == "__main__":
    unittest.main()
