"""`connect()`: the one place that knows whether the suite talks to Google or the emulator."""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbhelpers import identity, state
from nbhelpers import settings as settings_module
from nbhelpers.errors import ConfigError
from nbhelpers.settings import Settings
from nbhelpers.state import RunState, state_dir

BANNER = (
    "REHEARSAL MODE: talking to the local nbhelpers emulator at {url}. Nothing real is deployed "
    "and no GPU is billed; replies come from a rehearsal engine, not from Llama. Use "
    "backend='vertex' (or set GOOGLE_CLOUD_PROJECT and sign in to Google Cloud) for the real thing."
)
_in_process: Any = None  # the emulator this process started, when no URL was given
# Who a client of the emulator is, unless NBHELPERS_EMULATOR_IDENTITY says otherwise (set it
# empty to rehearse credentials without the e-mail scope).
REHEARSAL_IDENTITY = "rehearsal-user@example.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform", identity.EMAIL_SCOPE)
_current: Session | None = None  # the latest connect() of this process (see current_session)


@dataclass(kw_only=True)
class Session:
    settings: Settings
    credentials: Any
    state: RunState
    emulator_url: str | None = None

    def client_options(self) -> dict[str, str] | None:
        """For Google API clients other than aiplatform and storage."""
        return {"api_endpoint": self.emulator_url} if self.emulator_url else None

    def rest_client(self, client_class: type) -> Any:
        """A GAPIC client (Service Usage, Resource Manager) on the REST transport."""
        return client_class(credentials=self.credentials, transport="rest",
                            client_options=self.client_options())

    def record(self, **results: Any) -> None:
        """Keeps key results of the run (an endpoint id, a first reply) in its state file, where
        the batch runner's report finds them."""
        self.state.update(results={**self.state.get("results", {}), **results})

    def storage_client(self) -> Any:
        import google.cloud.storage as storage

        return storage.Client(project=self.settings.project, credentials=self.credentials)


def _trust_emulator_certificate(ca_file: str) -> None:
    """Dedicated endpoints are called over https; trust the emulator's self-signed certificate
    in addition to the usual authorities (requests and httpx read these variables)."""
    import certifi

    base = os.environ.get("NBHELPERS_BASE_CA_BUNDLE") or os.environ.get(
        "REQUESTS_CA_BUNDLE") or certifi.where()
    os.environ.setdefault("NBHELPERS_BASE_CA_BUNDLE", base)
    bundle = Path(ca_file).with_name("emulator-ca-bundle.pem")
    content = Path(base).read_text() + "\n" + Path(ca_file).read_text()
    if not bundle.exists() or bundle.read_text() != content:
        # Other kernels of the run read this file while they connect: a bundle written in
        # place can be read half-written ("PEM lib"); a rename is seen whole or not at all.
        partial = bundle.with_name(f".{bundle.name}.{os.getpid()}.tmp")
        partial.write_text(content)
        os.replace(partial, bundle)
    os.environ["REQUESTS_CA_BUNDLE"] = os.environ["SSL_CERT_FILE"] = str(bundle)


def start_emulator(*, host: str = "127.0.0.1", port: int = 0,
                   state_file: str | Path | None = None, deploy_seconds: float | None = None,
                   service_seconds: float = 0.0, engine: str | None = None) -> Any:
    """Starts the local emulator in this process (threads) and returns it (`.url`, `.stop()`).
    The client's one door to the emulator: the batch runner and the command line start it here.
    `engine`: "rehearsal" or "vllm" (the real vLLM server); None reads NBHELPERS_ENGINE."""
    from nbhelpers import emulator

    return emulator.start(host, port, state_file, deploy_seconds=deploy_seconds,
                          service_seconds=service_seconds, engine=engine)


def _emulator_url() -> str:
    global _in_process
    url = os.environ.get("NBHELPERS_EMULATOR_URL")
    if url:
        return url.rstrip("/")
    if _in_process is None:
        _in_process = start_emulator(state_file=state_dir() / "emulator-state.json")
    return _in_process.url


def _emulator_credentials() -> Any:
    """User credentials whose access token names the rehearsal identity: the suite finds who it
    is through the token-info endpoint exactly as with Google user credentials."""
    import google.oauth2.credentials

    from nbhelpers.emulator.identity import access_token

    email = os.environ.get("NBHELPERS_EMULATOR_IDENTITY", REHEARSAL_IDENTITY).strip()
    return google.oauth2.credentials.Credentials(token=access_token(email))


def _open_state(settings: Settings, credentials: Any) -> tuple[Settings, RunState]:
    """The run's state, mirrored to its folder of the staging bucket so a recycled runtime gets
    it back; run id "latest" becomes the owner's newest run mirrored there (else this runtime's
    current run)."""
    import dataclasses

    import google.cloud.storage as storage

    def client() -> Any:
        return storage.Client(project=settings.project, credentials=credentials)

    if settings.run_id == state.LATEST:
        found = state.latest_mirrored_run(client(), settings.bucket_name,
                                          settings.files_prefix(whole_owner=True))
        found = found or state.current_run_id()
        if not found:
            raise ConfigError(
                f"run_id {state.LATEST!r}: no run of {settings.identity} is mirrored in "
                f"{settings.bucket_uri}/{settings.files_prefix(whole_owner=True)} and this "
                "runtime has none; give the run id (the setup notebook printed it), or check "
                "the project, region and bucket")
        settings = dataclasses.replace(settings, run_id=found)
    mirror = state.BucketMirror(client, settings.bucket_name,
                                settings.files_prefix() + state.MIRROR_FILE)
    return settings, RunState(settings.run_id, mirror=mirror)


def connect(
    *,
    project: str = "",
    region: str = "",
    bucket_uri: str = "",
    backend: str = "auto",
    run_id: str = "",
    owner: str = "",
    quiet: bool = False,
) -> Session:
    """Resolves settings, finds who the credentials are (the owner of what the run creates),
    initialises aiplatform for the backend, and opens the run's state."""
    credentials: Any = None
    url: str | None = None

    def identify(backend_name: str) -> str:
        nonlocal credentials, url
        if backend_name == "emulator":
            url = _emulator_url()
            credentials = _emulator_credentials()
            return identity.google_identity(credentials, tokeninfo_url=url + "/tokeninfo")
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        except DefaultCredentialsError:
            raise ConfigError(f"no Google credentials found; {identity.SIGN_IN}") from None
        return identity.google_identity(credentials)

    resolved = settings_module.resolve(project=project, region=region, bucket_uri=bucket_uri,
                                       backend=backend, run_id=run_id, owner=owner,
                                       identify=identify)
    from google.cloud import aiplatform

    if resolved.backend == "emulator":
        assert url is not None  # identify() opened it
        with urllib.request.urlopen(url + "/emulator/info", timeout=10) as response:
            info = json.loads(response.read())
        if info.get("storage_url"):
            os.environ["STORAGE_EMULATOR_HOST"] = info["storage_url"]
        if info.get("ca_file"):
            _trust_emulator_certificate(info["ca_file"])
        os.environ["HF_ENDPOINT"] = url + "/huggingface"  # its stand-in Hugging Face Hub
        aiplatform.init(project=resolved.project, location=resolved.region,
                        api_endpoint=url, api_transport="rest", credentials=credentials,
                        staging_bucket=resolved.files_uri)
        if not quiet:
            print(BANNER.format(url=url))
    else:
        aiplatform.init(project=resolved.project, location=resolved.region,
                        credentials=credentials, staging_bucket=resolved.files_uri)
    asked_run_id = resolved.run_id
    resolved, run_state = _open_state(resolved, credentials)
    if resolved.run_id != asked_run_id:  # "latest" became a run id: its staging folder
        aiplatform.init(staging_bucket=resolved.files_uri)
    if run_state.restored_from and not quiet:
        print(f"Restored the state of run {resolved.run_id} from {run_state.restored_from} "
              "(this runtime had none).")
    run_state.update(project=resolved.project, region=resolved.region,
                     bucket_uri=resolved.bucket_uri, backend=resolved.backend,
                     owner=resolved.owner, identity=resolved.identity)
    if not quiet:
        print(f"project={resolved.project} region={resolved.region} "
              f"bucket={resolved.bucket_uri} run_id={resolved.run_id} "
              f"owner={resolved.identity} (label {resolved.owner})")
    global _current
    _current = Session(settings=resolved, credentials=credentials, state=run_state,
                       emulator_url=url)
    return _current


def current_session() -> Session | None:
    """The session of this kernel's latest connect(), for steps that take no session but read
    the project (the Hugging Face token from Secret Manager, while planning)."""
    return _current
