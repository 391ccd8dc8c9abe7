"""The transfer service's configuration: a YAML file (``--config``), overridden by ``DATALAKE_TRANSFER_*``
environment variables and flags; validated in one place, so a bad value is one line before anything starts."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from datalake.errors import ConfigError
from datalake.tokens.client import ClientCredentials
from datalake.tokens.source import TokenFile, read_secret
from datalake.transfer.auth import AuthSettings
from datalake.transfer.engine import EngineSettings
from datalake.transfer.optimizer import Settings as OptimizerSettings

_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class TLS(BaseModel):
    cert: Path  # the service's certificate (PEM)
    key: Path  # its private key (PEM)
    ca: Path | None = None  # CA (PEM file or directory) signing client certificates; None: no certs


class OIDC(BaseModel):
    """The issuer whose WLCG tokens the service takes (as FTS3 trusts its IAM)."""

    issuer: str  # its URL, as the tokens' ``iss`` names it
    audiences: list[str] = Field(min_length=1)  # a token's ``aud`` must name one of these
    accounts: dict[str, str] = Field(default_factory=dict)  # token subject -> account; other subjects are refused
    ca: Path | None = None  # a CA file for a private issuer's https


class StorageToken(BaseModel):
    """The service's own WLCG token for the storage (FTS3's robot credential): obtained from the issuer with the
    client-credentials grant and renewed in ``file`` for as long as the service runs."""

    issuer: str
    client_id: str
    secret_file: Path  # 0600
    file: Path  # where the current token is kept (0600)
    ca: Path | None = None  # a CA file for a private issuer's https


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATALAKE_TRANSFER_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"  # address the service listens on
    port: int = Field(default=8446, ge=1, le=65535)  # FTS3's REST port
    database: Path = Path("transfers.db")  # SQLite job store (relative to the config file)
    threads: int = Field(default=16, ge=2, le=256)  # HTTP worker threads
    tls: TLS | None = None  # cert, key and client CA (PEM): https; none: http
    tokens: dict[str, str] = Field(default_factory=dict)  # account -> sha256 hex of its bearer token
    certificates: dict[str, str] = Field(default_factory=dict)  # subject DN -> account (others refused)
    submitters: list[str] = Field(default_factory=list)  # accounts that may submit and change any job ([]: all)
    allow_anonymous: bool = False  # loopback callers without credentials (a local testbed over http only)
    oidc: OIDC | None = None  # WLCG tokens (JWTs) of this issuer are credentials too
    storage_token: StorageToken | None = None  # its own WLCG token, for every copy it makes (else BEARER_TOKEN*)
    # the engine
    stream_below: int = Field(default=EngineSettings.stream_below, ge=0)  # bytes: smaller streamed, larger TPC
    max_active: int = Field(default=64, ge=1, le=1024)  # transfers at once over all links
    retries: int = Field(default=3, ge=1, le=100)  # attempts per file for recoverable errors
    timeout: int = Field(default=1800, ge=10)  # seconds per copy
    link_start: int = Field(default=8, ge=1)  # transfers at once on a new link (the optimizer moves it)
    link_max: int = Field(default=32, ge=1)  # at most this many on one link

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then the environment, then the config file."""
        path = _config_file.get()
        file = (YamlConfigSettingsSource(settings_cls, yaml_file=path),) if path else ()
        return init_settings, env_settings, *file

    @field_validator("tokens")
    @classmethod
    def _digests(cls, tokens: dict[str, str]) -> dict[str, str]:
        for account, value in tokens.items():
            if len(value) != 64 or not set(value.lower()) <= set("0123456789abcdef"):
                raise ValueError(f"the token of {account} must be its SHA-256 (64 hex digits; datalake transfer token)")
        return tokens

    @model_validator(mode="after")
    def _sane(self) -> ServiceSettings:
        if self.link_start > self.link_max:
            raise ValueError("link_start must not exceed link_max")
        if self.allow_anonymous and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("allow_anonymous is only allowed when the service listens on loopback")
        return self

    def storage_token_file(self) -> TokenFile | None:
        """The service's own renewed token, when configured (``storage_token``)."""
        if self.storage_token is None:
            return None
        token = self.storage_token
        ca = str(token.ca) if token.ca else None
        client = ClientCredentials(token.issuer, token.client_id, read_secret(token.secret_file), ca)
        return TokenFile(token.file, client)

    def auth(self) -> AuthSettings:
        verify = None
        if self.oidc is not None:
            from datalake.transfer.oidc import TokenVerifier

            oidc = self.oidc
            verify = TokenVerifier(oidc.issuer, oidc.audiences, oidc.accounts, str(oidc.ca) if oidc.ca else None)
        return AuthSettings(
            token_digests=self.tokens,
            certificate_accounts=self.certificates,
            allow_anonymous=self.allow_anonymous,
            verify_jwt=verify,
        )

    def engine(self) -> EngineSettings:
        return EngineSettings(
            stream_below=self.stream_below,
            max_active=self.max_active,
            timeout=self.timeout,
            optimizer=OptimizerSettings(start=self.link_start, high=self.link_max),
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def load(path: Path | None, **overrides: Any) -> ServiceSettings:
    """Settings from flags (``overrides``), the environment and a YAML file, in falling order."""
    import yaml

    if path is not None:
        try:
            values = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror}") from None
        except (yaml.YAMLError, ValueError) as err:  # ValueError: not UTF-8, or a date such as 2027-02-30
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(values, dict | None):
            raise ConfigError(f"{path} must be a mapping of settings")
    token = _config_file.set(path)
    try:
        settings = ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"transfer service setting {where}: {first['msg']}") from None
    finally:
        _config_file.reset(token)
    if path is not None:  # relative paths are relative to the config file, not to where the service starts
        base = path.parent

        def rooted(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        update: dict[str, Any] = {"database": rooted(settings.database)} if database_from_file(overrides) else {}
        if settings.storage_token:
            token = settings.storage_token
            update["storage_token"] = token.model_copy(
                update={"secret_file": rooted(token.secret_file), "file": rooted(token.file)}
            )
        if settings.tls:
            tls = settings.tls
            update["tls"] = TLS(cert=rooted(tls.cert), key=rooted(tls.key), ca=rooted(tls.ca) if tls.ca else None)
        settings = settings.model_copy(update=update)
    if settings.tls:
        for what, file in (("cert", settings.tls.cert), ("key", settings.tls.key), ("ca", settings.tls.ca)):
            if file is not None and not file.exists():
                raise ConfigError(f"transfer service setting tls.{what}: {file} does not exist")
    if settings.storage_token:
        read_secret(settings.storage_token.secret_file)  # a missing or open secret file is one line now
    return settings


def database_from_file(overrides: dict[str, Any]) -> bool:
    return overrides.get("database") is None and "DATALAKE_TRANSFER_DATABASE" not in os.environ
