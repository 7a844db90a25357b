-- Extra databases next to `dagster` (POSTGRES_DB): the Iceberg JDBC catalog and the Apicurio registry.
CREATE DATABASE iceberg OWNER qp;
CREATE DATABASE registry OWNER qp;
