# twinhub: the two commands.
#   make dev    install what is missing, build, run hub + dashboard + device endpoint on :8787
#   make test   install what tests need, build, and run every test
.PHONY: dev test build tools deploy serve
dev:
	@scripts/dev.sh
test:
	@scripts/test.sh
build: tools
	@scripts/build.sh
tools:
	@scripts/tools.sh
# The Worker under workerd directly (no wrangler on the request path): issue 15's runtime, on
# http://127.0.0.1:$${PORT:-18787}, state in .twinhub/workerd/. Not yet the run command.
serve: build
	@scripts/serve.sh .twinhub/workerd $${PORT:-18787}
deploy: build
	node_modules/.bin/wrangler deploy
