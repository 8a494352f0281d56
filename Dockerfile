# A function image with shim in the watchdog's place (OpenFaaS python3-http style).
#   docker build -t hello-secret --build-arg FUNCTION_DIR=examples/hello-secret .
# At run time the platform provides SHIM_STORE, SHIM_FUNCTION and SHIM_FUNCTION_KEY (the credential
# mounted read-only, e.g. from a Kubernetes Secret volume at /var/run/shim/key.json).
# Not built in CI: the development machines have no Docker engine.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shim ./shim
COPY runtimes/python ./runtimes/python
RUN pip wheel --no-cache-dir --wheel-dir /wheels . ./runtimes/python

FROM python:3.11-slim
ARG FUNCTION_DIR=examples/hello-secret
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels pip install --no-cache-dir /wheels/*.whl \
    && useradd --create-home --uid 10001 app
WORKDIR /home/app/function
COPY ${FUNCTION_DIR}/ ./
USER app
ENV mode=http \
    upstream_url=http://127.0.0.1:5000 \
    fprocess="python -m shim_runtime handler:handle" \
    SHIM_FUNCTION_KEY=/var/run/shim/key.json
EXPOSE 8080
HEALTHCHECK --interval=5s CMD [ -e /tmp/.lock ] || exit 1
CMD ["shim", "run"]
