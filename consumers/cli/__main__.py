from agentlog.consumers.cli import main

main()
