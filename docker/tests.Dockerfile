# The compose `tests` service for registry users: Python with pytest and requests.
# (`make images` assembles an equivalent image without a registry: docker/airgap/.)
FROM python:3.12-slim
RUN pip install --no-cache-dir "pytest>=7.2,<10" "requests>=2.28,<3"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
CMD ["python3", "-m", "pytest", "--version"]
