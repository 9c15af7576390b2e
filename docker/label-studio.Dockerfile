# Label Studio 1.23.2 built from PyPI on a base image of your choice: a stand-in for the official
# heartexlabs/label-studio:1.23.2 where no container registry can be reached (offline sites, `make image-test`).
# Same layout as the official image: user 1001, data in /label-studio/data, port 8080, python3 for the health check.
#
#   docker build -f docker/label-studio.Dockerfile --build-arg BASE_IMAGE=<python-3.11 image> \
#       -t examine/label-studio:1.23.2 docker/
#   LABEL_STUDIO_IMAGE=examine/label-studio:1.23.2 docker compose up -d
#
# The base needs Python 3.10-3.12 with its `venv` module, `useradd` and CA certificates. PIP_INDEX_URL /
# PIP_EXTRA_INDEX_URL / PIP_TRUSTED_HOST point pip at a mirror (no credentials: `docker history` shows them).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG LABEL_STUDIO_VERSION=1.23.2
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
RUN python3 -m venv /opt/label-studio \
    && /opt/label-studio/bin/pip install --no-cache-dir --disable-pip-version-check "label-studio==${LABEL_STUDIO_VERSION}" \
    && groupadd --gid 1001 labelstudio \
    && useradd --uid 1001 --gid 1001 --home-dir /label-studio --no-create-home labelstudio \
    && mkdir -p /label-studio/data /label-studio/files \
    && chown -R 1001:1001 /label-studio
ENV PATH=/opt/label-studio/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data
WORKDIR /label-studio
USER 1001
VOLUME ["/label-studio/data"]
EXPOSE 8080
CMD ["label-studio", "start", "--no-browser", "--internal-host", "0.0.0.0", "--port", "8080"]
