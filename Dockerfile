# The Airflow image of docker-compose.yaml: the official image with this project's pinned
# requirements. Airflow version and Python version must match requirements.txt (tests/compose
# checks it), so installing the pins keeps the image's Airflow and adds this project's packages.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt

# dags/, plugins/ and include/ are mounted by docker-compose.yaml (live code); /opt/airflow is the
# project root inside the container, so include/problems and data/ resolve as in a checkout.
ENV PYTHONPATH=/opt/airflow:/opt/airflow/plugins
