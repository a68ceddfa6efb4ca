# Stand-in for prefecthq/prefect:3.8.8-python3.11: Prefect 3.8.8 on Debian 12's Python 3.11, in a
# venv first on PATH (`prefect` and `python` as in the upstream image). fastapi is held below 0.151
# as the project holds it: later releases turn Prefect 3.8's listings into 422s. SQLAlchemy is held
# below 2.1 as the project holds it: 2.1 breaks the server's insert of scheduled runs.
ARG BASE_IMAGE=nnserve-standin/debian:bookworm
FROM ${BASE_IMAGE}
RUN python3 -m venv /opt/prefect \
    && /opt/prefect/bin/pip install --no-cache-dir prefect==3.8.8 'fastapi>=0.139,<0.151' \
        'sqlalchemy[asyncio]>=2.0,<2.1' asyncpg
ENV PATH=/opt/prefect/bin:$PATH
CMD ["prefect", "server", "start", "--host", "0.0.0.0"]
