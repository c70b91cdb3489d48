from dldoctor.cli import main

main()
