"""
Tests for L{jmapd.config}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import attrs
from twisted.trial.unittest import SynchronousTestCase

from jmapd.config import (
    KEYS,
    Config,
    ConfigError,
    RateLimit,
    default_config,
    load_config,
)

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(TOP, "conf", "jmapd.yaml")
REFERENCE = os.path.join(TOP, "docs", "configuration.md")

#: The labels a certificate and a private key file must hold; the blocks'
#: content is only read by OpenSSL when the service starts.
PEM_STAND_IN = "-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\n"


class ConfigTestCase(SynchronousTestCase):
    """
    Helpers to write a configuration file and load it with no ambient
    environment.
    """

    def write(self, text: str) -> str:
        """
        Write C{text} to a new file and return its path.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(
        self,
        text: str = "",
        environ: Mapping[str, str] | None = None,
        overrides: Sequence[str] = (),
    ) -> Config:
        """
        Load C{text} as a configuration file.
        """
        return load_config(self.write(text), environ or {}, overrides)

    def problems(
        self,
        text: str = "",
        environ: Mapping[str, str] | None = None,
        overrides: Sequence[str] = (),
    ) -> list[str]:
        """
        Load C{text}, which must fail, and return the problems reported.
        """
        error = self.assertRaises(ConfigError, self.load, text, environ, overrides)
        return error.problems

    def assertProblem(self, text: str, problem: str, **kwargs: object) -> None:
        """
        Loading C{text} reports exactly C{problem}.
        """
        self.assertEqual(self.problems(text, **kwargs), [problem])  # type: ignore[arg-type]

    def certificate(self) -> str:
        """
        Make a file standing in for a certificate or key (only its
        readability and its PEM labels are checked) and return its absolute
        path.
        """
        return os.path.abspath(self.write(PEM_STAND_IN))


class KeyTableTests(SynchronousTestCase):
    """
    The key table and the L{Config} class agree, and every key is documented.
    """

    def test_attributeForEveryKey(self) -> None:
        """
        Every key is a L{Config} attribute named after it with '-' turned
        into '_', and the only other attributes are config_path and
        jmap_url_defaulted.
        """
        names = [f.name for f in attrs.fields(Config)]
        self.assertEqual(
            names,
            ["config_path", "jmap_url_defaulted"]
            + [name.replace("-", "_") for name in KEYS],
        )
        for name, spec in KEYS.items():
            self.assertEqual(spec.name, name)
            self.assertEqual(spec.attribute, name.replace("-", "_"))
            self.assertTrue(spec.doc)

    def test_sampleMentionsEveryKey(self) -> None:
        """
        conf/jmapd.yaml shows every key (set or commented out), so that a
        new key cannot be added without showing it to operators.
        """
        with open(SAMPLE, encoding="utf-8") as f:
            sample = f.read()
        missing = [name for name in KEYS if f"{name}:" not in sample]
        self.assertEqual(missing, [])

    def test_referenceDocumentsEveryKey(self) -> None:
        """
        docs/configuration.md has a section for every key.
        """
        with open(REFERENCE, encoding="utf-8") as f:
            reference = f.read()
        missing = [name for name in KEYS if f"### `{name}`" not in reference]
        self.assertEqual(missing, [])

    def test_sampleLoads(self) -> None:
        """
        conf/jmapd.yaml loads without errors, listens on 127.0.0.1 and keeps
        its data in the C{data} directory at the top of the checkout.
        """
        config = load_config(SAMPLE, environ={})
        self.assertEqual(config.config_path, SAMPLE)
        self.assertEqual(config.jmap_bind_addr, "127.0.0.1")
        self.assertEqual(config.db_path, os.path.join(TOP, "data"))
        self.assertFalse(config.tls)


class DefaultsTests(ConfigTestCase):
    """
    What a configuration that sets nothing means.
    """

    def test_defaults(self) -> None:
        """
        Without a file, environment or overrides every key has its
        documented default; jmap-url and cors-allowed-origins are derived.
        """
        config = load_config(None, environ={})
        self.assertIsNone(config.config_path)
        self.assertEqual(config.jmap_bind_addr, "")
        self.assertEqual(config.jmap_port, 8080)
        self.assertEqual(config.jmap_url, "http://localhost:8080")
        self.assertTrue(config.jmap_url_defaulted)
        self.assertIsNone(config.jmap_cert_path)
        self.assertIsNone(config.jmap_key_path)
        self.assertFalse(config.tls)
        self.assertEqual(config.log_level, "info")
        self.assertFalse(config.strict_cors)
        self.assertEqual(config.cache_size_ids, 33554432)
        self.assertEqual(config.cache_tti_ids, 3600.0)
        self.assertEqual(config.cache_tti_sharings, 300.0)
        self.assertEqual(config.cache_tti_acl, 3600.0)
        self.assertEqual(config.cache_tti_recipients, 86400.0)
        self.assertEqual(config.worker_pool_size, os.cpu_count() or 1)
        self.assertEqual(config.db_path, os.path.abspath("data"))
        self.assertEqual(config.http_request_timeout, 30.0)
        self.assertFalse(config.use_forwarded_header)
        self.assertEqual(config.max_size_upload, 50000000)
        self.assertEqual(config.max_concurrent_uploads, 4)
        self.assertEqual(config.max_size_request, 10000000)
        self.assertEqual(config.max_concurrent_requests, 4)
        self.assertEqual(config.max_calls_in_request, 16)
        self.assertEqual(config.max_objects_in_get, 500)
        self.assertEqual(config.max_objects_in_set, 500)
        self.assertEqual(config.query_max_results, 5000)
        self.assertEqual(config.changes_max_results, 5000)
        self.assertEqual(config.blob_temp_ttl, 3600.0)
        self.assertEqual(config.max_changelog_entries, 10000)
        self.assertEqual(config.blob_store, "files")
        self.assertEqual(config.rate_limit_authenticated, RateLimit(1000, 60.0))
        self.assertEqual(config.rate_limit_anonymous, RateLimit(100, 60.0))
        self.assertEqual(config.rate_limit_auth, RateLimit(10, 60.0))
        self.assertEqual(config.cors_allowed_origins, ("http://localhost:8080",))

    def test_emptyFile(self) -> None:
        """
        An empty file (or one with only comments) means all defaults; the
        config remembers the file's absolute path.
        """
        path = self.write("# nothing here\n")
        config = load_config(path, environ={})
        self.assertEqual(config.config_path, os.path.abspath(path))
        self.assertEqual(
            attrs.evolve(config, config_path=None, db_path="x"),
            attrs.evolve(load_config(None, environ={}), db_path="x"),
        )

    def test_defaultConfig(self) -> None:
        """
        L{default_config} is the defaults with parsed values changed by
        attribute name, and the rules between keys still apply.
        """
        config = default_config(
            jmap_port=0,
            db_path="/tmp/x",
            blob_temp_ttl=0.5,
            rate_limit_auth=RateLimit(3, 1.0),
        )
        self.assertEqual(config.jmap_port, 0)
        self.assertEqual(config.db_path, "/tmp/x")
        self.assertEqual(config.blob_temp_ttl, 0.5)
        self.assertEqual(config.rate_limit_auth, RateLimit(3, 1.0))
        self.assertEqual(config.jmap_url, "http://localhost:0")
        self.assertEqual(default_config(), load_config(None, environ={}))

    def test_defaultConfigUnknownName(self) -> None:
        """
        L{default_config} rejects a name that is no key's attribute with a
        hint, as it would a misspelt keyword argument.
        """
        error = self.assertRaises(TypeError, default_config, jmap_prot=0)
        self.assertIn("did you mean 'jmap_port'?", str(error))

    def test_defaultConfigChecksValues(self) -> None:
        """
        L{default_config} checks the values it is given and the rules
        between keys.
        """
        error = self.assertRaises(
            ConfigError,
            default_config,
            jmap_port=True,
            jmap_cert_path=self.certificate(),
        )
        self.assertEqual(
            error.problems,
            [
                (
                    "jmap-port (from default_config): expected an integer from 0"
                    " to 65535, got true"
                ),
                (
                    "jmap-cert-path, jmap-key-path: set both to serve HTTPS, or"
                    " neither; jmap-cert-path is set but jmap-key-path is not"
                ),
            ],
        )

    def test_rateLimitString(self) -> None:
        """
        A L{RateLimit} reads back as count/period in seconds.
        """
        self.assertEqual(str(RateLimit(1000, 60.0)), "1000/60s")


class FileTests(ConfigTestCase):
    """
    Values from the YAML file.
    """

    def test_values(self) -> None:
        """
        Values set in the file replace the defaults.
        """
        config = self.load(
            "jmap-bind-addr: 127.0.0.1\n"
            "jmap-port: 9000\n"
            "log-level: DEBUG\n"
            "strict-cors: true\n"
            "worker-pool-size: 2\n"
            "cors-allowed-origins: [https://a.example, 'http://b.example:8000']\n"
        )
        self.assertEqual(config.jmap_bind_addr, "127.0.0.1")
        self.assertEqual(config.jmap_port, 9000)
        self.assertEqual(config.log_level, "debug")
        self.assertTrue(config.strict_cors)
        self.assertEqual(config.worker_pool_size, 2)
        self.assertEqual(
            config.cors_allowed_origins,
            ("https://a.example", "http://b.example:8000"),
        )

    def test_nullMeansUnsetForOptionalKeys(self) -> None:
        """
        An empty value of a key whose default is "not set" (jmap-url) means
        not set; of any other key it is an error, never the default.
        """
        self.assertTrue(self.load("jmap-url:\n").jmap_url_defaulted)
        self.assertProblem(
            "jmap-port:\n", "jmap-port: expected an integer from 0 to 65535, got null"
        )

    def test_unknownKey(self) -> None:
        """
        An unknown key is an error, with the closest key as a hint.
        """
        self.assertProblem(
            "jmap-prot: 9000\n", "jmap-prot: unknown key; did you mean 'jmap-port'?"
        )

    def test_unknownKeyWithoutHint(self) -> None:
        """
        An unknown key resembling no key is reported without a hint.
        """
        self.assertProblem("zzzzzz: 1\n", "zzzzzz: unknown key")

    def test_notAMapping(self) -> None:
        """
        A file that is not a mapping of keys to values is an error.
        """
        self.assertProblem(
            "- jmap-port\n- 9000\n",
            "expected a mapping of keys to values at the top of the file, got"
            " list ['jmap-port', 9000]",
        )

    def test_badYAML(self) -> None:
        """
        A YAML syntax error is reported with its line and column, under a
        first line naming the file.
        """
        path = self.write("jmap-port: 9000\nlog-level: [info\n")
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertEqual(len(error.problems), 1)
        self.assertTrue(
            error.problems[0].startswith("line 3, column 1: not valid YAML:"),
            error.problems[0],
        )
        self.assertEqual(
            str(error).splitlines()[0],
            f"configuration errors in {os.path.abspath(path)}:",
        )

    def test_duplicateKey(self) -> None:
        """
        A key given twice is an error naming its line, not a silent choice.
        """
        problems = self.problems("jmap-port: 1\njmap-port: 2\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("line 2, column 1:"), problems[0])
        self.assertIn("jmap-port", problems[0])

    def test_unreadableFile(self) -> None:
        """
        A missing configuration file is an error naming it.
        """
        path = os.path.abspath(self.mktemp())
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertEqual(
            str(error),
            f"configuration errors in {path}:\n"
            "cannot read the configuration file: No such file or directory",
        )

    def test_allProblemsTogether(self) -> None:
        """
        Every problem in the file, environment and overrides is reported in
        one L{ConfigError}, one line each.
        """
        error = self.assertRaises(
            ConfigError,
            load_config,
            self.write("jmap-port: abc\nlog-level: loud\ncache-tti-id: 5\n"),
            {"JMAPD_STRICT_CORS": "maybe"},
            ["max-size-upload=big"],
        )
        self.assertEqual(
            sorted(error.problems),
            sorted(
                [
                    "jmap-port: expected an integer from 0 to 65535, got 'abc'",
                    (
                        "log-level: expected one of error, warn, info, debug, trace,"
                        " got 'loud'"
                    ),
                    "cache-tti-id: unknown key; did you mean 'cache-tti-ids'?",
                    (
                        "strict-cors (from JMAPD_STRICT_CORS): expected true or false"
                        " (or yes/no, on/off, 1/0), got 'maybe'"
                    ),
                    (
                        "max-size-upload (from --set): expected a size (bytes, or a"
                        " number with a unit B, KB, MB, GB, KiB, MiB or GiB, such as"
                        " '50MB'), got 'big'"
                    ),
                ]
            ),
        )
        self.assertEqual(str(error).count("\n"), 5)

    def test_errorWithoutFile(self) -> None:
        """
        Without a file the first line of the error names none.
        """
        error = self.assertRaises(ConfigError, load_config, None, {}, ["jmap-port=x"])
        self.assertEqual(
            str(error),
            "configuration errors:\n"
            "jmap-port (from --set): expected an integer from 0 to 65535, got 'x'",
        )


class ValueTests(ConfigTestCase):
    """
    Each type of value: what is accepted and how a wrong value is reported.
    """

    def test_integer(self) -> None:
        """
        Integers accept integral numbers and digit strings.
        """
        self.assertEqual(self.load("jmap-port: 0\n").jmap_port, 0)
        self.assertEqual(self.load("jmap-port: 65535\n").jmap_port, 65535)
        self.assertEqual(self.load("jmap-port: '8081'\n").jmap_port, 8081)
        self.assertEqual(self.load("jmap-port: 8082.0\n").jmap_port, 8082)

    def test_integerErrors(self) -> None:
        """
        An integer out of range, a boolean, a fraction or a word is an error
        saying which integers are allowed.
        """
        for value, shown in [
            ("abc", "'abc'"),
            ("65536", "65536"),
            ("-1", "-1"),
            ("true", "true"),
            ("1.5", "1.5"),
        ]:
            self.assertProblem(
                f"jmap-port: {value}\n",
                f"jmap-port: expected an integer from 0 to 65535, got {shown}",
            )
        self.assertProblem(
            "worker-pool-size: 0\n",
            "worker-pool-size: expected an integer of at least 1, got 0",
        )

    def test_boolean(self) -> None:
        """
        In the file a boolean is YAML true or false; a word such as 'yes'
        (a string in YAML 1.2) or a number is an error.
        """
        self.assertTrue(self.load("use-forwarded-header: true\n").use_forwarded_header)
        self.assertFalse(self.load("strict-cors: false\n").strict_cors)
        self.assertProblem(
            "strict-cors: yes\n", "strict-cors: expected true or false, got 'yes'"
        )
        self.assertProblem(
            "strict-cors: 1\n", "strict-cors: expected true or false, got 1"
        )

    def test_booleanWords(self) -> None:
        """
        From the environment or --set, booleans are also yes/no, on/off and
        1/0, in any case.
        """
        for word, expected in [
            ("true", True),
            ("YES", True),
            ("on", True),
            ("1", True),
            ("False", False),
            ("no", False),
            ("off", False),
            ("0", False),
        ]:
            config = self.load(overrides=[f"strict-cors={word}"])
            self.assertEqual(config.strict_cors, expected, word)

    def test_durations(self) -> None:
        """
        A duration is seconds as a number, or a number with a unit ms, s, m,
        h or d; it is stored as float seconds.
        """
        for written, seconds in [
            ("0", 0.0),
            ("90", 90.0),
            ("2.5", 2.5),
            ("'500ms'", 0.5),
            ("10s", 10.0),
            ("5m", 300.0),
            ("1h", 3600.0),
            ("1.5h", 5400.0),
            ("1d", 86400.0),
            ("'30'", 30.0),
            ("2 m", 120.0),
        ]:
            config = self.load(f"cache-tti-acl: {written}\n")
            self.assertEqual(config.cache_tti_acl, seconds, written)
            self.assertIsInstance(config.cache_tti_acl, float)

    def test_durationErrors(self) -> None:
        """
        A negative duration, an unknown unit or something else is an error.
        """
        self.assertProblem(
            "blob-temp-ttl: -5s\n",
            "blob-temp-ttl: expected a duration that is not negative, got '-5s'",
        )
        self.assertProblem(
            "blob-temp-ttl: -1\n",
            "blob-temp-ttl: expected a duration that is not negative, got -1",
        )
        for value, shown in [
            ("5y", "'5y'"),
            ("soon", "'soon'"),
            ("true", "true"),
            (".inf", "inf"),
        ]:
            self.assertProblem(
                f"blob-temp-ttl: {value}\n",
                "blob-temp-ttl: expected a duration (seconds, or a number with a"
                f" unit ms, s, m, h or d, such as '5m'), got {shown}",
            )

    def test_sizes(self) -> None:
        """
        A size is bytes as a number, or a number with a unit B, KB, MB, GB
        (powers of 1000) or KiB, MiB, GiB (powers of 1024), in any case; it
        is stored as int bytes.
        """
        for written, size in [
            ("0", 0),
            ("1234", 1234),
            ("10B", 10),
            ("2KB", 2000),
            ("50MB", 50000000),
            ("1.5GB", 1500000000),
            ("4KiB", 4096),
            ("32MiB", 33554432),
            ("1GiB", 1073741824),
            ("32mib", 33554432),
            ("2 kb", 2000),
        ]:
            config = self.load(f"cache-size-ids: {written}\n")
            self.assertEqual(config.cache_size_ids, size, written)
            self.assertIsInstance(config.cache_size_ids, int)

    def test_sizeErrors(self) -> None:
        """
        A negative size, an unknown unit, a fraction of a byte or a size
        below the key's minimum is an error.
        """
        expected = (
            "expected a size (bytes, or a number with a unit B, KB, MB, GB, KiB,"
            " MiB or GiB, such as '50MB')"
        )
        self.assertProblem(
            "cache-size-ids: 5XB\n", f"cache-size-ids: {expected}, got '5XB'"
        )
        self.assertProblem(
            "cache-size-ids: 1.5B\n", f"cache-size-ids: {expected}, got '1.5B'"
        )
        self.assertProblem(
            "cache-size-ids: -1MB\n",
            "cache-size-ids: expected a size that is not negative, got '-1MB'",
        )
        self.assertProblem(
            "max-size-upload: 0\n",
            "max-size-upload: expected a size of at least 1 byte, got 0",
        )

    def test_logLevel(self) -> None:
        """
        log-level is one of five words.
        """
        for level in ["error", "warn", "info", "debug", "trace"]:
            self.assertEqual(self.load(f"log-level: {level}\n").log_level, level)
        self.assertProblem(
            "log-level: 3\n",
            "log-level: expected one of error, warn, info, debug, trace, got 3",
        )

    def test_blobStore(self) -> None:
        """
        blob-store is files or database (any case); database is valid with
        either engine: in PostgreSQL with db-url, in the SQLite database
        under db-path without it.
        """
        url = "db-url: postgresql://jmapd@127.0.0.1/jmapd\n"
        self.assertEqual(self.load("blob-store: Files\n").blob_store, "files")
        self.assertEqual(self.load(url + "blob-store: database\n").blob_store, "database")
        sqlite = self.load("blob-store: database\n")
        self.assertEqual((sqlite.blob_store, sqlite.db_url), ("database", None))
        self.assertEqual(default_config(blob_store="database").blob_store, "database")
        self.assertProblem(
            "blob-store: s3\n",
            "blob-store: expected one of files, database, got 's3'",
        )

    def test_rateLimits(self) -> None:
        """
        A rate limit is COUNT/PERIOD, the period in seconds or with a unit.
        """
        config = self.load(
            "rate-limit-authenticated: 1000/60\n"
            "rate-limit-anonymous: 100/1m\n"
            "rate-limit-auth: 5 / 500ms\n"
        )
        self.assertEqual(config.rate_limit_authenticated, RateLimit(1000, 60.0))
        self.assertEqual(config.rate_limit_anonymous, RateLimit(100, 60.0))
        self.assertEqual(config.rate_limit_auth, RateLimit(5, 0.5))

    def test_rateLimitErrors(self) -> None:
        """
        A rate limit without both parts, with a count below 1 or a period
        that is not a positive duration is an error.
        """
        for value, shown in [
            ("fast", "'fast'"),
            ("10", "10"),
            ("0/60", "'0/60'"),
            ("10/0", "'10/0'"),
            ("10/-1m", "'10/-1m'"),
            ("10/1y", "'10/1y'"),
            ("1/2/3", "'1/2/3'"),
        ]:
            self.assertProblem(
                f"rate-limit-auth: {value}\n",
                "rate-limit-auth: expected a rate limit COUNT/PERIOD such as"
                " '1000/60' (1000 requests per 60 seconds) or '1000/1m', got"
                f" {shown}",
            )

    def test_bindAddress(self) -> None:
        """
        jmap-bind-addr is an IPv4 or IPv6 address or a host name.
        """
        for value in ["0.0.0.0", "::", "::1", "fe80::1", "example.com", "localhost"]:
            self.assertEqual(
                self.load(f"jmap-bind-addr: '{value}'\n").jmap_bind_addr, value
            )

    def test_bindAddressErrors(self) -> None:
        """
        A bracketed IPv6 literal, something that is no host name, or a
        number is an error.
        """
        for value, shown in [("'[::1]'", "'[::1]'"), ("a b", "'a b'"), ("5", "5")]:
            self.assertProblem(
                f"jmap-bind-addr: {value}\n",
                "jmap-bind-addr: expected an IPv4 or IPv6 address or a host name"
                f" (empty for all interfaces), got {shown}",
            )

    def test_urlErrors(self) -> None:
        """
        jmap-url must be an absolute http(s) URL without query, fragment or
        user name, with a valid port.
        """
        for value in [
            "ftp://example.com",
            "example.com",
            "/jmap",
            "https://example.com/?a=1",
            "https://example.com/#top",
            "https://user@example.com",
            "https://example.com:99999",
            "https://",
        ]:
            self.assertProblem(
                f"jmap-url: '{value}'\n",
                "jmap-url: expected an absolute http:// or https:// URL without"
                f" query or fragment, got '{value}'",
            )

    def test_originErrors(self) -> None:
        """
        An origin with a path, or cors-allowed-origins that is not a list,
        is an error.
        """
        self.assertProblem(
            "cors-allowed-origins: [https://a.example/app]\n",
            "cors-allowed-origins: expected an origin scheme://host[:port]"
            " without a path, got 'https://a.example/app'",
        )
        self.assertProblem(
            "cors-allowed-origins: 5\n",
            "cors-allowed-origins: expected a list of origins"
            " (scheme://host[:port]), got 5",
        )

    def test_pathErrors(self) -> None:
        """
        A path must be a non-empty string.
        """
        self.assertProblem("db-path: 5\n", "db-path: expected a path, got 5")
        self.assertProblem("db-path: ''\n", "db-path: expected a path, got ''")


class PathTests(ConfigTestCase):
    """
    Relative paths and the certificate files.
    """

    def test_relativeToConfigFile(self) -> None:
        """
        Relative paths resolve against the directory of the configuration
        file, whatever the working directory; they are stored absolute.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "conf", "tls"))
        for name in ["cert.pem", "key.pem"]:
            with open(os.path.join(directory, "conf", "tls", name), "w") as f:
                f.write(PEM_STAND_IN)
        path = os.path.join(directory, "conf", "jmapd.yaml")
        with open(path, "w") as f:
            f.write(
                "db-path: ../data\n"
                "jmap-cert-path: tls/cert.pem\n"
                "jmap-key-path: tls/key.pem\n"
            )
        config = load_config(path, environ={})
        self.assertEqual(config.db_path, os.path.join(directory, "data"))
        self.assertEqual(
            config.jmap_cert_path, os.path.join(directory, "conf", "tls", "cert.pem")
        )
        self.assertEqual(
            config.jmap_key_path, os.path.join(directory, "conf", "tls", "key.pem")
        )
        self.assertTrue(config.tls)

    def test_relativeWithoutFile(self) -> None:
        """
        Without a configuration file, relative paths resolve against the
        working directory.
        """
        config = load_config(None, environ={"JMAPD_DB_PATH": "store"})
        self.assertEqual(config.db_path, os.path.join(os.getcwd(), "store"))

    def test_certificateWithoutKey(self) -> None:
        """
        A certificate without a key is an error naming both keys.
        """
        self.assertProblem(
            f"jmap-cert-path: {self.certificate()}\n",
            "jmap-cert-path, jmap-key-path: set both to serve HTTPS, or neither;"
            " jmap-cert-path is set but jmap-key-path is not",
        )

    def test_keyWithoutCertificate(self) -> None:
        """
        A key without a certificate is an error naming both keys.
        """
        self.assertProblem(
            f"jmap-key-path: {self.certificate()}\n",
            "jmap-cert-path, jmap-key-path: set both to serve HTTPS, or neither;"
            " jmap-key-path is set but jmap-cert-path is not",
        )

    def test_unreadableCertificate(self) -> None:
        """
        A certificate or key that cannot be read stops start-up with its
        absolute path and the reason.
        """
        missing = os.path.abspath(self.mktemp())
        self.assertProblem(
            f"jmap-cert-path: {missing}\njmap-key-path: {self.certificate()}\n",
            f"jmap-cert-path: cannot read '{missing}': No such file or directory",
        )

    def test_notPEM(self) -> None:
        """
        A certificate, key or CA file that holds no PEM block of its kind
        (not PEM at all, the key where the certificate belongs, an
        encrypted key) is a configuration problem naming the key and the
        file, for every such key at once, instead of an OpenSSL error once
        the configuration was accepted (or, for the relay's CA file, a
        failed verification at every send).
        """
        garbage = os.path.abspath(self.write("not a certificate\n"))
        key_only = os.path.abspath(self.write("-----BEGIN PRIVATE KEY-----\n"))
        encrypted = os.path.abspath(self.write("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"))
        certificate = "a certificate (a '-----BEGIN CERTIFICATE-----' block)"
        key = "an unencrypted private key (a '-----BEGIN PRIVATE KEY-----' block)"
        self.assertEqual(
            self.problems(
                f"jmap-cert-path: {key_only}\n"
                f"jmap-key-path: {garbage}\n"
                f"lmtp-cert-path: {garbage}\n"
                f"lmtp-key-path: {encrypted}\n"
                f"smtp-relay-ca-path: {garbage}\n"
            ),
            [
                f"jmap-cert-path: expected a PEM file holding {certificate}, got '{key_only}'",
                f"jmap-key-path: expected a PEM file holding {key}, got '{garbage}'",
                f"smtp-relay-ca-path: expected a PEM file holding {certificate}, got '{garbage}'",
                f"lmtp-cert-path: expected a PEM file holding {certificate}, got '{garbage}'",
                f"lmtp-key-path: expected a PEM file holding {key}, got '{encrypted}'",
            ],
        )

    def test_PEMLabels(self) -> None:
        """
        PKCS#8 and traditional RSA and EC keys are accepted, and one file
        may hold both the certificate (chain) and the key.
        """
        for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]:
            key = os.path.abspath(self.write(f"-----BEGIN {label}-----\n"))
            config = self.load(f"jmap-cert-path: {self.certificate()}\njmap-key-path: {key}\n")
            self.assertEqual(config.jmap_key_path, key)
        both = self.certificate()
        config = self.load(f"lmtp-cert-path: {both}\nlmtp-key-path: {both}\n")
        self.assertEqual((config.lmtp_cert_path, config.lmtp_key_path), (both, both))

    def test_dataDirectory(self) -> None:
        """
        A db-path that is a file, or under one, or that cannot be written
        to or created, is a configuration problem naming the key and the
        path, instead of an OS error once the service is being built.
        """
        blocker = os.path.abspath(self.write(""))
        expected = "db-path: expected a directory jmapd can create or write to, got"
        self.assertProblem(
            f"db-path: {blocker}\n", f"{expected} '{blocker}': it is not a directory"
        )
        self.assertProblem(
            f"db-path: {blocker}/data/jmapd\n",
            f"{expected} '{blocker}/data/jmapd': '{blocker}' is not a directory",
        )
        parent = os.path.abspath(self.mktemp())
        os.mkdir(parent)
        self.patch(os, "access", lambda path, mode: path != parent)
        self.assertProblem(
            f"db-path: {parent}/data\n",
            f"{expected} '{parent}/data': it does not exist and '{parent}' is not writable",
        )
        self.assertProblem(f"db-path: {parent}\n", f"{expected} '{parent}': it is not writable")
        creatable = os.path.join(os.path.abspath(self.mktemp()), "x", "data")
        self.assertEqual(self.load(f"db-path: {creatable}\n").db_path, creatable)

    def test_dataDirectoryUnused(self) -> None:
        """
        With db-url and blob-store database nothing is kept under db-path,
        so it is not checked.
        """
        blocker = os.path.abspath(self.write(""))
        config = self.load(
            f"db-path: {blocker}\ndb-url: postgresql://jmapd@db/jmapd\nblob-store: database\n"
        )
        self.assertEqual(config.db_path, blocker)
        self.assertEqual(
            len(self.problems(f"db-path: {blocker}\ndb-url: postgresql://jmapd@db/jmapd\n")), 1
        )


class RuleTests(ConfigTestCase):
    """
    Settings of several keys that only make sense together are checked
    with the rest of the configuration, before anything listens.
    """

    def test_timeoutsNotZero(self) -> None:
        """
        http-request-timeout, push-timeout, smtp-relay-timeout and
        ws-client-timeout must be longer than 0: a timeout of 0 would answer
        every HTTP request with 408 and fail every push and relay attempt at
        once, and autobahn takes a ping timeout of 0 as none.  Other
        durations still accept 0.
        """
        self.assertEqual(
            self.problems(
                "push-timeout: 0\nsmtp-relay-timeout: 0s\nws-client-timeout: 0ms\n"
                "http-request-timeout: 0\n"
            ),
            [
                "http-request-timeout: expected a duration longer than 0, got 0",
                "push-timeout: expected a duration longer than 0, got 0",
                "ws-client-timeout: expected a duration longer than 0, got '0ms'",
                "smtp-relay-timeout: expected a duration longer than 0, got '0s'",
            ],
        )
        config = self.load("push-timeout: 500ms\npush-retry-interval: 0\nhttp-request-timeout: 1m\n")
        self.assertEqual((config.push_timeout, config.push_retry_interval), (0.5, 0.0))
        self.assertEqual(config.http_request_timeout, 60.0)

    def test_lmtpCertificateWithoutKey(self) -> None:
        """
        An LMTP certificate without its key (or the other way round), and
        lmtp-tls-only without both, are configuration problems reported
        with the others, not a start-up failure after the JMAP listener
        bound.
        """
        self.assertEqual(
            self.problems(
                f"lmtp-key-path: {self.certificate()}\nlmtp-tls-only: true\nlog-level: loud\n"
            ),
            [
                "log-level: expected one of error, warn, info, debug, trace, got 'loud'",
                "lmtp-cert-path, lmtp-key-path: set both to offer STARTTLS, or neither;"
                " lmtp-key-path is set but lmtp-cert-path is not",
                "lmtp-tls-only: true needs lmtp-cert-path and lmtp-key-path"
                " (a client cannot start TLS without them)",
            ],
        )
        self.assertProblem(
            f"lmtp-cert-path: {self.certificate()}\n",
            "lmtp-cert-path, lmtp-key-path: set both to offer STARTTLS, or neither;"
            " lmtp-cert-path is set but lmtp-key-path is not",
        )
        both = self.certificate()
        config = self.load(
            f"lmtp-cert-path: {both}\nlmtp-key-path: {both}\nlmtp-tls-only: true\n"
        )
        self.assertTrue(config.lmtp_tls_only)

    def test_relayAuthenticationWithoutPassword(self) -> None:
        """
        smtp-relay-auth without smtp-relay-secret or smtp-relay-secret-file
        is a problem: every message would fail authentication at the
        relay.
        """
        self.assertProblem(
            "smtp-relay-host: smtp.example.com\nsmtp-relay-auth: jmapd\n",
            "smtp-relay-auth: set smtp-relay-secret or smtp-relay-secret-file"
            " too; there is no password to authenticate to the relay as 'jmapd'",
        )

    def test_relayPasswordWithoutUser(self) -> None:
        """
        A relay password without smtp-relay-auth would be ignored: it is a
        problem, not a silent default.
        """
        secret_file = os.path.abspath(self.write("pw\n"))
        self.assertEqual(
            self.problems(
                f"smtp-relay-secret: pw\nsmtp-relay-secret-file: {secret_file}\n"
            ),
            [
                "smtp-relay-secret: has no effect without smtp-relay-auth"
                " (the user name to authenticate to the relay with)",
                "smtp-relay-secret-file: has no effect without smtp-relay-auth"
                " (the user name to authenticate to the relay with)",
            ],
        )
        config = self.load(
            f"smtp-relay-auth: jmapd\nsmtp-relay-secret-file: {secret_file}\n"
        )
        self.assertEqual(config.smtp_relay_secret_file, secret_file)


class OverrideTests(ConfigTestCase):
    """
    Values from the environment and from --set.
    """

    def test_environment(self) -> None:
        """
        JMAPD_ plus the key in upper case with '_' for '-' overrides a key;
        the value is parsed by the key's rules.
        """
        config = self.load(
            environ={
                "JMAPD_JMAP_PORT": "9000",
                "JMAPD_CACHE_TTI_IDS": "5m",
                "JMAPD_MAX_SIZE_UPLOAD": "1MiB",
                "JMAPD_USE_FORWARDED_HEADER": "yes",
                "JMAPD_RATE_LIMIT_AUTH": "3/1s",
                "HOME": "/root",
            }
        )
        self.assertEqual(config.jmap_port, 9000)
        self.assertEqual(config.cache_tti_ids, 300.0)
        self.assertEqual(config.max_size_upload, 1048576)
        self.assertTrue(config.use_forwarded_header)
        self.assertEqual(config.rate_limit_auth, RateLimit(3, 1.0))

    def test_osEnviron(self) -> None:
        """
        Without an explicit environment, os.environ is read.
        """
        self.patch(os, "environ", {"JMAPD_JMAP_PORT": "9001"})
        self.assertEqual(load_config(None).jmap_port, 9001)

    def test_environmentError(self) -> None:
        """
        A bad value from the environment names the variable it came from.
        """
        self.assertProblem(
            "",
            "jmap-port (from JMAPD_JMAP_PORT): expected an integer from 0 to"
            " 65535, got 'abc'",
            environ={"JMAPD_JMAP_PORT": "abc"},
        )

    def test_unknownEnvironmentVariable(self) -> None:
        """
        A JMAPD_ variable that names no key is an error with a hint.
        """
        self.assertProblem(
            "",
            "JMAPD_JMAP_PROT: no configuration key is named by this environment"
            " variable; did you mean JMAPD_JMAP_PORT?",
            environ={"JMAPD_JMAP_PROT": "1"},
        )

    def test_set(self) -> None:
        """
        --set key=value overrides a key; the value is everything after the
        first '=', and the last --set of a key wins.
        """
        config = self.load(
            overrides=[
                "jmap-port=9002",
                "jmap-url=https://mail.example/jmap?",
                "jmap-url=https://mail.example/jmap/",
                "log-level=trace",
            ]
        )
        self.assertEqual(config.jmap_port, 9002)
        self.assertEqual(config.jmap_url, "https://mail.example/jmap")
        self.assertEqual(config.log_level, "trace")

    def test_setErrors(self) -> None:
        """
        --set without '=' and --set of an unknown key are errors; a bad
        value says it came from --set.
        """
        self.assertEqual(
            self.problems(overrides=["jmap-port", "jmap-prot=1", "log-level=x"]),
            [
                "--set 'jmap-port': expected key=value",
                "jmap-prot (from --set): unknown key; did you mean 'jmap-port'?",
                (
                    "log-level (from --set): expected one of error, warn, info,"
                    " debug, trace, got 'x'"
                ),
            ],
        )

    def test_precedence(self) -> None:
        """
        --set wins over the environment, which wins over the file, which
        wins over the default.
        """
        text = "jmap-port: 1\nmax-calls-in-request: 2\nmax-objects-in-get: 3\n"
        environ = {"JMAPD_JMAP_PORT": "10", "JMAPD_MAX_CALLS_IN_REQUEST": "20"}
        config = self.load(text, environ, ["jmap-port=100"])
        self.assertEqual(config.jmap_port, 100)
        self.assertEqual(config.max_calls_in_request, 20)
        self.assertEqual(config.max_objects_in_get, 3)
        self.assertEqual(config.max_objects_in_set, 500)

    def test_overriddenFileValueNotParsed(self) -> None:
        """
        Only the winning value of a key is parsed, so --set can stand in for
        a bad value in the file.
        """
        config = self.load("jmap-port: abc\n", overrides=["jmap-port=1"])
        self.assertEqual(config.jmap_port, 1)

    def test_listFromText(self) -> None:
        """
        From the environment or --set a list is a YAML flow list or
        comma-separated; empty means no origin.
        """
        self.assertEqual(
            self.load(
                overrides=["cors-allowed-origins=[https://a.example, http://b:81]"]
            ).cors_allowed_origins,
            ("https://a.example", "http://b:81"),
        )
        self.assertEqual(
            self.load(
                environ={"JMAPD_CORS_ALLOWED_ORIGINS": "https://a.example,http://b"}
            ).cors_allowed_origins,
            ("https://a.example", "http://b"),
        )
        self.assertEqual(
            self.load(overrides=["cors-allowed-origins=[]"]).cors_allowed_origins,
            (),
        )

    def test_emptyTextUnsetsOptional(self) -> None:
        """
        An empty value from --set unsets a key whose default is "not set",
        so a file's jmap-url can be overridden back to derived.
        """
        config = self.load("jmap-url: https://mail.example\n", overrides=["jmap-url="])
        self.assertTrue(config.jmap_url_defaulted)
        self.assertEqual(config.jmap_url, "http://localhost:8080")


class DerivedTests(ConfigTestCase):
    """
    jmap-url and cors-allowed-origins when they are not given.
    """

    def assertDerived(self, text: str, url: str) -> None:
        """
        C{text} derives jmap-url C{url} and says so.
        """
        config = self.load(text)
        self.assertEqual(config.jmap_url, url)
        self.assertTrue(config.jmap_url_defaulted)

    def test_ipv4(self) -> None:
        """
        An IPv4 bind address is the URL's host.
        """
        self.assertDerived(
            "jmap-bind-addr: 127.0.0.1\njmap-port: 8000\n", "http://127.0.0.1:8000"
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 bind address is put in brackets.
        """
        self.assertDerived("jmap-bind-addr: '::1'\n", "http://[::1]:8080")

    def test_hostName(self) -> None:
        """
        A host name bind address is the URL's host.
        """
        self.assertDerived("jmap-bind-addr: mail.example\n", "http://mail.example:8080")

    def test_allInterfaces(self) -> None:
        """
        Listening on all interfaces (empty, 0.0.0.0 or ::) gives localhost.
        """
        for value in ["''", "0.0.0.0", "'::'"]:
            self.assertDerived(f"jmap-bind-addr: {value}\n", "http://localhost:8080")

    def test_https(self) -> None:
        """
        With a certificate and key the derived URL is https.
        """
        self.assertDerived(
            f"jmap-cert-path: {self.certificate()}\n"
            f"jmap-key-path: {self.certificate()}\n"
            "jmap-port: 8443\n",
            "https://localhost:8443",
        )

    def test_given(self) -> None:
        """
        A given jmap-url is kept (without a trailing slash) and not flagged
        as derived.
        """
        config = self.load("jmap-url: https://mail.example/\n")
        self.assertEqual(config.jmap_url, "https://mail.example")
        self.assertFalse(config.jmap_url_defaulted)

    def test_originsFromDerivedURL(self) -> None:
        """
        By default the only allowed origin is the one of jmap-url.
        """
        config = self.load("jmap-bind-addr: '::1'\njmap-port: 9000\n")
        self.assertEqual(config.cors_allowed_origins, ("http://[::1]:9000",))

    def test_originsFromGivenURL(self) -> None:
        """
        The default origin drops jmap-url's path and a default port, as a
        browser's Origin header does.
        """
        config = self.load("jmap-url: HTTPS://Mail.Example:443/jmap\n")
        self.assertEqual(config.cors_allowed_origins, ("https://mail.example",))

    def test_originsNormalised(self) -> None:
        """
        Given origins are stored the way browsers send them: lower case, no
        default port, no trailing slash.
        """
        config = self.load(
            "cors-allowed-origins:\n"
            "  - HTTP://A.Example:80/\n"
            "  - https://b.example:8443\n"
            "  - moz-extension://abc\n"
        )
        self.assertEqual(
            config.cors_allowed_origins,
            ("http://a.example", "https://b.example:8443", "moz-extension://abc"),
        )
