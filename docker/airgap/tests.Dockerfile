# Air-gapped equivalent of docker/tests.Dockerfile: Debian's python3, python3-pytest and
# python3-requests are already in the minbase that `make images` builds.
ARG BASE
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
CMD ["python3", "-m", "pytest", "--version"]
