# The image compose.yaml runs for the API, the worker and the migration.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY domain domain
COPY projections projections
COPY adapters adapters
COPY api api
COPY stripe_emulator stripe_emulator
COPY tools tools
RUN pip install --no-cache-dir .
ENV STRIPEMETER_HOST=0.0.0.0
EXPOSE 3000
CMD ["stripemeter", "serve"]
