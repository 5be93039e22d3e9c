# syntax=docker/dockerfile:1

# Build: compile better-sqlite3's native binding and the TypeScript, then drop dev packages.
FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# npm ci runs the prepare script, which builds dist/.
RUN npm ci && npm prune --omit=dev

# Run: no compiler, not root, data in a volume.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    WATCHTIME_DB=/data/watchtime.db
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY sql ./sql
COPY src/web ./src/web
RUN mkdir /data && chown node:node /data
USER node
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s \
  CMD node -e "fetch('http://127.0.0.1:8000/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
# The server handles SIGTERM itself (flush, checkpoint, exit 0), so it can be PID 1.
ENTRYPOINT ["node", "bin/watchtime"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
